"""The learned model against the BTYD models on one holdout of a store.

    python benchmarks/bench_learned.py --db STORE --calibration-end 1997-09-30 --horizon 273
    python benchmarks/bench_learned.py --db STORE --calibration-end 2025-10-01 --horizon 90 --time

Fits :class:`retain.models.learned.LearnedModel` on the store's orders to the end of
the calibration day (its training cut-offs and labels stay inside that period) and
scores, for every customer with an order by then, "buys again within the horizon"
(at least one purchase day after the calibration end): AUC, log-loss and Brier score
of p_buy, and the holdout totals of purchases (distinct days) and net revenue
against what was made. The BTYD models (Pareto/NBD, MBG/NBD, BG/NBD; weeks, purchases
merged per day) are fitted on the calibration summary and scored the same way: their
probability is 1 - P(X(H) = 0), their purchases E[X(H)], their revenue E[X(H)] x the
Gamma-Gamma conditional spend. ``--time`` fits and scores the learned model only,
for a run under ``/usr/bin/time``. Settings are the model's defaults: nothing here is
chosen on the holdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from retain.accuracy import auc, brier, log_loss
from retain.models import GammaGamma
from retain.models.learned import (
    Cutoff,
    LearnedModel,
    _base_window,
    _fit_base,
    _labels_at,
    _orders_at,
)
from retain.store import Store


def btyd_predictions(
    store: Store, day: pd.Timestamp, horizon: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(buy), expected purchases and expected revenue of the BTYD model ``name``
    fitted on the summary to ``day``, in customer_id order."""
    ids, orders = _orders_at(store.con, day)
    model = _fit_base(name, orders)
    cut = Cutoff(store, day, ids, orders, model, (horizon,), [])
    p, n = _base_window(cut, float(horizon))
    x = np.asarray(orders["frequency"], dtype=float)
    m = np.asarray(orders["monetary"], dtype=float)
    usable = (x > 0) & (m > 0)
    spend_model = GammaGamma().fit(pd.DataFrame({"frequency": x[usable], "monetary": m[usable]}))
    return p, n, n * spend_model._spend_values(x, m)


def scores(
    p: np.ndarray, n: np.ndarray, r: np.ndarray, count: np.ndarray, revenue: np.ndarray
) -> dict[str, Any]:
    buy = (count > 0).astype(float)
    return {
        "auc": auc(p, buy),
        "log_loss": log_loss(p, buy),
        "brier": brier(p, buy),
        "predicted_buyers": float(p.sum()),
        "predicted_purchases": float(n.sum()),
        "purchases_bias_pct": float(100 * (n.sum() / count.sum() - 1)),
        "predicted_revenue": float(r.sum()),
        "revenue_bias_pct": float(100 * (r.sum() / revenue.sum() - 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--calibration-end", required=True)
    parser.add_argument(
        "--horizon", type=int, nargs="+", required=True, help="days; the first is scored"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="fit and score the learned model only")
    args = parser.parse_args()
    day = pd.Timestamp(args.calibration_end)
    warnings.simplefilter("ignore")
    with Store(args.db, read_only=True) as store:
        start = time.perf_counter()
        model = LearnedModel(horizons=tuple(args.horizon), seed=args.seed).fit(store, day)
        fitted = time.perf_counter()
        predicted = model.predict(store, day)
        scored = time.perf_counter()
        report: dict[str, Any] = {
            "db": args.db,
            "calibration_end": args.calibration_end,
            "horizon_days": args.horizon[0],
            "customers": len(predicted),
            "fit_seconds": round(fitted - start, 2),
            "predict_seconds": round(scored - fitted, 2),
            "card": model.card()["horizons"],
        }
        if not args.time:
            h = args.horizon[0]
            count, revenue = _labels_at(store.con, day, [h])[h]
            report["actual"] = {
                "buyers": int((count > 0).sum()),
                "purchases": float(count.sum()),
                "revenue": float(revenue.sum()),
            }
            models = {
                "learned": scores(
                    predicted[f"p_buy_{h}d"].to_numpy(),
                    predicted[f"expected_purchases_{h}d"].to_numpy(),
                    predicted[f"expected_revenue_{h}d"].to_numpy(),
                    count,
                    revenue,
                )
            }
            for name in ("pnbd", "mbgnbd", "bgnbd"):
                models[name] = scores(*btyd_predictions(store, day, h, name), count, revenue)
            report["models"] = models
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
