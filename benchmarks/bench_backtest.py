"""Backtest benchmark: the learned model against the BTYD models, and what a backtest costs.

    python benchmarks/bench_backtest.py accuracy       # the accuracy table alone
    python benchmarks/run.py --only backtest           # both parts, into RESULTS.md

Accuracy (``accuracy``): :func:`retain.backtest.backtest` at one origin and one
horizon per data set, every model scored the same way (see ``retain.backtest``), on

- CDNOW master and sample, calibration to 1997-09-30, the 39-week (273-day) holdout
  to 1998-06-30 (the papers' split); the learned model trains on cut-offs inside the
  calibration period only;
- ``benchmarks/patterns.py`` (20,000 customers, seed 0): regular buyers, a
  November-December peak and a spend decline before leaving, behaviour the BTYD
  models do not describe; calibration to 2025-03-31, 273 days.

Per model: customers, AUC, log-loss and Brier of "buys again within the horizon",
the expected calibration error (ten equal-count bins), predicted and actual holdout
purchases (distinct days) with the bias, and the normalised Gini of predicted against
actual holdout revenue. Nothing is tuned on these holdouts: the learned model's
settings are its defaults.

A ceiling row per data set (:func:`ceiling`) says how far any model could go with
the learned model's features: LightGBM trained on the holdout's own answers (who
bought in the 273 days), five-fold cross-validated, the best of a few settings. It
sees the test window, so it is no forecast; a target above it asks the calibration
period for information it does not hold.

Cost (``run``, at the benchmark size): ``retain backtest`` (every model, the learned
one included, default origins and horizons) and ``retain backtest --no-learned``, each
a fresh process on a store ingested (untimed) from ``benchmarks/generate.py`` data,
and the learned model's training and scoring alone (:func:`learned_call`); wall
seconds and each process's peak memory.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROOT = HERE.parent
CDNOW = (("CDNOW master", False), ("CDNOW sample", True))
CDNOW_ORIGIN, CDNOW_AS_OF = "1997-09-30", "1998-06-30"
PATTERNS_ORIGIN, PATTERNS_AS_OF = "2025-03-31", "2025-12-31"
HORIZON = 273
PATTERNS_CUSTOMERS = 20_000
#: issue targets of the timed runs (the backtest with every model; the learned model)
TARGETS = {"backtest": "< 120 s", "learned": "< 60 s, < 3 GB"}
#: the generated store's observation day and the learned model's calibration end there
GENERATED_AS_OF, LEARNED_END = "2026-01-01", "2025-10-01"


def _scored(name: str, store: Any, origin: str) -> list[dict[str, Any]]:
    from retain.backtest import backtest

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = backtest(store, origins=[origin], horizons=[HORIZON], save=False).to_dict()
    seconds = round(time.perf_counter() - start, 1)
    rows = []
    for r in run["results"]:
        if r.get("error"):
            rows.append({"data": name, "model": r["model"], "error": r["error"]})
            continue
        rows.append(
            {
                "data": name,
                "origin": origin,
                "horizon_days": HORIZON,
                "model": r["model"],
                "customers": r["customers"],
                "buyers": r["buyers"],
                "auc": round(r["auc"], 4),
                "log_loss": round(r["log_loss"], 4),
                "brier": round(r["brier"], 4),
                "ece": round(r["ece"], 4),
                "predicted": round(r["predicted_total"]),
                "actual": round(r["actual_total"]),
                "bias_pct": round(r["bias_pct"], 1),
                "gini": None if r["gini"] is None else round(r["gini"], 3),
                "backtest_s": seconds,
            }
        )
    return rows


#: the ceiling's booster settings (its row reports the best of them)
CEILING_SETTINGS = (
    {"num_leaves": 4, "learning_rate": 0.03, "min_data_in_leaf": 200, "rounds": 400},
    {"num_leaves": 7, "learning_rate": 0.05, "min_data_in_leaf": 300, "rounds": 300},
    {"num_leaves": 15, "learning_rate": 0.02, "min_data_in_leaf": 100, "rounds": 500},
    {"num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 20, "rounds": 200},
)
CEILING_FOLDS = 5


def ceiling(name: str, store: Any, origin: str) -> dict[str, Any]:
    """The best five-fold cross-validated AUC and log-loss of "buys within the horizon"
    that LightGBM reaches on the learned model's features at ``origin`` when trained on
    the holdout's own labels (see the module's docstring)."""
    import datetime as dt

    import lightgbm as lgb
    import numpy as np

    from retain.accuracy import auc, log_loss
    from retain.models.learned import LearnedModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = LearnedModel(horizons=(HORIZON,)).fit(store, origin).features(store, origin)
    start = dt.date.fromisoformat(origin) + dt.timedelta(days=1)
    bought = store.con.execute(
        "SELECT DISTINCT customer_id FROM orders WHERE ordered_at >= ? AND ordered_at < ?",
        [start, start + dt.timedelta(days=HORIZON)],
    ).fetchnumpy()["customer_id"]
    y = features.index.isin(np.asarray(bought, dtype=object)).astype(np.float64)
    X = features.to_numpy(dtype=np.float64)
    fold = np.random.default_rng(0).integers(0, CEILING_FOLDS, len(y))
    best: dict[str, Any] = {}
    for setting in CEILING_SETTINGS:
        params = {k: v for k, v in setting.items() if k != "rounds"}
        params |= {"objective": "binary", "verbosity": -1, "seed": 0, "deterministic": True}
        p = np.zeros(len(y))
        for k in range(CEILING_FOLDS):
            train = fold != k
            booster = lgb.train(params, lgb.Dataset(X[train], y[train]), setting["rounds"])
            p[~train] = booster.predict(X[~train])
        score = auc(p, y)
        if not best or score > best["auc"]:
            best = {"auc": score, "log_loss": log_loss(p, y)}
    return {
        "data": name,
        "origin": origin,
        "horizon_days": HORIZON,
        "model": f"ceiling: trained on the holdout's labels, {CEILING_FOLDS}-fold CV",
        "customers": len(y),
        "buyers": int(y.sum()),
        "auc": round(best["auc"], 4),
        "log_loss": round(best["log_loss"], 4),
    }


def accuracy() -> list[dict[str, Any]]:
    """The accuracy rows: every data set, every model."""
    from patterns import generate
    from retain.datasets import cdnow_path
    from retain.ingest import ingest
    from retain.store import Store

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name, sample in CDNOW:
            with Store(Path(folder) / f"{name.split()[1]}.duckdb") as store:
                ingest(store, cdnow_path(sample), format="cdnow", as_of=CDNOW_AS_OF)
                rows += _scored(name, store, CDNOW_ORIGIN)
                rows.append(ceiling(name, store, CDNOW_ORIGIN))
        orders = Path(folder) / "patterns.parquet"
        generate(PATTERNS_CUSTOMERS, 0).to_parquet(orders, index=False)
        with Store(Path(folder) / "patterns.duckdb") as store:
            ingest(store, orders, as_of=PATTERNS_AS_OF)
            rows += _scored(f"patterns {PATTERNS_CUSTOMERS:,}", store, PATTERNS_ORIGIN)
            rows.append(ceiling(f"patterns {PATTERNS_CUSTOMERS:,}", store, PATTERNS_ORIGIN))
    best = {}
    for r in rows:  # the best BTYD model per data set, by log-loss
        better = r["data"] not in best or r.get("log_loss", 1e9) < best[r["data"]]
        btyd = r["model"] != "learned" and not r["model"].startswith("ceiling")
        if btyd and "log_loss" in r and better:
            best[r["data"]] = r["log_loss"]
    for r in rows:
        if r["model"] == "learned" and "log_loss" in r:
            r["beats_best_btyd"] = r["log_loss"] < best[r["data"]]
            if r["data"] == "CDNOW master":
                r["target"] = "AUC >= 0.80, log-loss < best BTYD, total within 5%"
    return rows


def learned_call(db: str, end: str) -> None:
    """One fresh-process call: train the learned model on ``db`` to ``end`` and score
    every customer at ``end``; reports the seconds and the rows scored."""
    from harness import report
    from retain.models.learned import LearnedModel
    from retain.store import Store

    with Store(db, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model = LearnedModel().fit(store, end)
        predicted = model.predict(store, end)
        seconds = time.perf_counter() - start
    report(seconds, customers=len(predicted))


def run(n_customers: int) -> list[dict[str, Any]]:
    from harness import load_1m, machine_load, run_fresh
    from retain.ingest import ingest
    from retain.store import Store
    from run import data_dir

    rows = accuracy()
    data = data_dir(n_customers)
    retain = str(Path(sys.executable).with_name("retain"))
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "bench.duckdb")
        with Store(db) as store:
            ingest(store, data / "orders.parquet", as_of=GENERATED_AS_OF)
        timed = [
            (
                "backtest",
                "retain backtest (every model, learned included)",
                [retain, "backtest", "--db", db],
            ),
            (
                "",
                "retain backtest --no-learned",
                [retain, "backtest", "--db", db, "--no-learned"],
            ),
            (
                "learned",
                f"learned model: train to {LEARNED_END} and score",
                [sys.executable, __file__, "learned", db, LEARNED_END],
            ),
        ]
        for kind, name, command in timed:
            before = load_1m()
            done = run_fresh(command, cwd=ROOT)
            rows.append(
                {
                    "data": f"generate.py {n_customers:,}",
                    "model": name,
                    "seconds": round(done.seconds, 1),
                    "peak_mb": round(done.peak_mb),
                    **machine_load(before, load_1m()),
                    "target": TARGETS.get(kind, ""),
                }
            )
    return rows


def main() -> None:
    if sys.argv[1:2] == ["learned"]:
        learned_call(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["accuracy"]:
        for row in accuracy():
            print(json.dumps(row))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
