"""Accuracy benchmark: the repeat-purchase models on CDNOW, judged on a holdout.

    python benchmarks/bench_accuracy.py [--out benchmarks/ACCURACY.md]

For the CDNOW sample (2,357 customers) and master (23,570) data sets, each
calibrated to 1997-09-30 (the papers' split) and to 1997-12-31, with the
holdout to 1998-06-30 (unit weeks, purchases merged per day), and for each of
BG/NBD, MBG/NBD and Pareto/NBD:

- :func:`retain.validate.compare`: the holdout log-likelihood of each customer's
  purchase count (total and per customer), predicted and actual holdout
  purchases, RMSE, MAE, the next-purchase window coverage, and its choice of
  model with the reason (a paired bootstrap interval);
- the fit guard (:func:`retain.guard.check_fit`) on each model fitted on the
  calibration summary, with a Gamma-Gamma spend model and the store's net
  revenue in the 365 days to the calibration end; the model kept is the first in
  compare's order that passes, as ``retain fit --model auto`` keeps it;
- mean P(alive) at the calibration end, and the AUC of P(alive) as a ranking of
  "buys again in the holdout" (Mann-Whitney, ties averaged), over all customers,
  over the one-time buyers (frequency 0) and over the repeat buyers;
- how many customers' holdout purchase count (distinct days) and holdout net
  revenue fall inside their 90% predictive range (``interval=0.9``: low, high),
  and, for contrast, inside the 90% band of the mean (``confidence=0.9``:
  mean_low, mean_high), over the holdout's length;
- the guard on each model fitted on the whole history to 1998-06-30: its
  ``one_time_buyers`` check needs one-time buyers silent for over 365 days, which
  neither calibration end has (CDNOW's customers first bought in early 1997).

The script prints the Markdown section; ``--out`` also writes it to a file,
keeping any text between ``<!-- notes -->`` and ``<!-- /notes -->`` already in
that file. ``run`` (for ``benchmarks/run.py``) returns one row per data set,
calibration end and model, and rewrites ``benchmarks/ACCURACY.md`` the same way.
CDNOW has a fixed size: the number of customers asked for is not used.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HOLDOUT_END = "1998-06-30"
CALIBRATION_ENDS = ("1997-09-30", "1997-12-31")
DATASETS = (("sample", True), ("master", False))
UNIT, GRAIN = "W", "D"
LEVEL = 0.9
#: revenue ranges are compared with this slack (floating point at 0)
MONEY_SLACK = 1e-9
ACCURACY_MD = HERE / "ACCURACY.md"
TITLE = f"## Accuracy on CDNOW (holdout to {HOLDOUT_END})"
NOTES_OPEN, NOTES_CLOSE = "<!-- notes -->", "<!-- /notes -->"


def holdout_actuals(
    tx: pd.DataFrame, index: pd.Index, calibration_end: pd.Timestamp
) -> pd.DataFrame:
    """Each calibration customer's holdout purchases (distinct days) and net revenue:
    the orders after the calibration end's day up to the end of the holdout's day."""
    stamp = pd.to_datetime(tx["ordered_at"])
    start = calibration_end + pd.Timedelta(days=1)
    stop = pd.Timestamp(HOLDOUT_END) + pd.Timedelta(days=1)
    held = tx.loc[(stamp >= start) & (stamp < stop), ["customer_id", "net_revenue"]]
    day = stamp[held.index].dt.normalize()
    grouped = held.assign(day=day).groupby("customer_id")
    return pd.DataFrame(
        {
            "purchases": grouped["day"].nunique().reindex(index, fill_value=0).astype(float),
            "revenue": grouped["net_revenue"].sum().reindex(index, fill_value=0.0),
        }
    )


def history(tx: pd.DataFrame, calibration_end: pd.Timestamp) -> dict[str, float]:
    """The fit guard's store history (as :func:`retain.guard.store_history`): net revenue
    in the 365 days to the calibration end, and the days of history those cover."""
    stamp = pd.to_datetime(tx["ordered_at"])
    start = calibration_end - pd.Timedelta(days=364)
    stop = calibration_end + pd.Timedelta(days=1)
    recent = tx.loc[(stamp >= start) & (stamp < stop), "net_revenue"].sum()
    days = (calibration_end - stamp.min().normalize()).days + 1
    return {"revenue_12m": float(recent), "days": float(min(days, 365))}


def inside(actual: pd.Series, low: pd.Series, high: pd.Series, slack: float = 0.0) -> float:
    """Share of customers with ``low - slack <= actual <= high + slack``."""
    a = actual.to_numpy(dtype=float)
    hit = (a >= low.to_numpy(dtype=float) - slack) & (a <= high.to_numpy(dtype=float) + slack)
    return float(hit.mean())


def evaluate(data: str, tx: pd.DataFrame, calibration_end: str) -> dict[str, Any]:
    """Every figure for one data set and calibration end."""
    import retain
    from retain.accuracy import auc
    from retain.guard import check_fit, failed
    from retain.models import TRANSACTION_MODELS, GammaGamma
    from retain.validate import compare

    started = time.perf_counter()
    cal_end = pd.Timestamp(calibration_end)
    weeks = (pd.Timestamp(HOLDOUT_END) - cal_end).days / 7
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        table = compare(tx, calibration_end, holdout_end=HOLDOUT_END, unit=UNIT, grain=GRAIN)
        summary = retain.summarize(tx, unit=UNIT, grain=GRAIN, observation_end=calibration_end)
        spend = GammaGamma().fit(summary)
        store = history(tx, cal_end)
        actual = holdout_actuals(tx, summary.index, cal_end)
        if float(actual["purchases"].sum()) != float(table["actual"].iloc[0]):
            raise RuntimeError(
                f"holdout purchases {actual['purchases'].sum():,.0f} differ from compare's "
                f"{table['actual'].iloc[0]:,.0f}: the definitions have drifted apart"
            )
        buys = actual["purchases"].to_numpy() > 0
        once = summary["frequency"].to_numpy() == 0
        rows = []
        kept = None
        for order, name in enumerate(table["model"], start=1):
            model = TRANSACTION_MODELS[name]().fit(summary)
            checks = check_fit(model, spend, summary, store, model.fit_message_)
            fails = failed(checks)
            if kept is None and not fails:
                kept = name
            p_alive = model.p_alive(summary).to_numpy()
            counts = model.expected_purchases(summary, weeks, interval=LEVEL, confidence=LEVEL)
            value = model.clv(
                summary, gamma_gamma=spend, horizon=weeks, interval=LEVEL, confidence=LEVEL
            )
            row = table.loc[table["model"] == name].iloc[0]
            rows.append(
                {
                    "model": name,
                    "order": order,
                    "holdout_ll": float(row["holdout_log_likelihood"]),
                    "holdout_ll_mean": float(row["holdout_log_likelihood_mean"]),
                    "predicted": float(row["predicted"]),
                    "actual": float(row["actual"]),
                    "rmse": float(row["rmse"]),
                    "mae": float(row["mae"]),
                    "window_coverage": row["next_window_coverage"],
                    "window_customers": row["next_window_customers"],
                    "checks": [c.name for c in checks],
                    "fails": [c.name for c in fails],
                    "fail_messages": [f"{c.name}: {c.message}" for c in fails],
                    "p_alive_mean": float(p_alive.mean()),
                    "auc_all": auc(p_alive, buys),
                    "auc_one_time": auc(p_alive[once], buys[once]),
                    "auc_repeat": auc(p_alive[~once], buys[~once]),
                    "range_purchases": inside(actual["purchases"], counts["low"], counts["high"]),
                    "range_revenue": inside(
                        actual["revenue"], value["low"], value["high"], MONEY_SLACK
                    ),
                    "band_purchases": inside(
                        actual["purchases"], counts["mean_low"], counts["mean_high"]
                    ),
                    "band_revenue": inside(
                        actual["revenue"], value["mean_low"], value["mean_high"], MONEY_SLACK
                    ),
                }
            )
    for row in rows:
        row["kept"] = row["model"] == kept
    return {
        "data": data,
        "calibration_end": calibration_end,
        "weeks": weeks,
        "customers": len(summary),
        "one_time": int(once.sum()),
        "buy_again": float(buys.mean()),
        "buy_again_one_time": float(buys[once].mean()) if once.any() else None,
        "actual_revenue": float(actual["revenue"].sum()),
        "history": store,
        "choice": table.attrs["choice"],
        "kept": kept,
        "rows": rows,
        "warnings": list(dict.fromkeys(str(w.message) for w in seen)),
        "seconds": time.perf_counter() - started,
    }


def guard_at_end(data: str, tx: pd.DataFrame) -> list[dict[str, Any]]:
    """The guard on each model fitted on the whole history to the holdout end (what
    ``retain fit`` checks there): by then most one-time buyers have been silent for
    over 365 days, which no calibration end above allows."""
    import retain
    from retain.guard import check_fit
    from retain.models import TRANSACTION_MODELS, GammaGamma

    end = pd.Timestamp(HOLDOUT_END)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = retain.summarize(tx, unit=UNIT, grain=GRAIN, observation_end=HOLDOUT_END)
        spend = GammaGamma().fit(summary)
        store = history(tx, end)
        rows = []
        for name, cls in TRANSACTION_MODELS.items():
            model = cls().fit(summary)
            checks = {
                c.name: c for c in check_fit(model, spend, summary, store, model.fit_message_)
            }
            silent = checks.get("one_time_buyers")
            rows.append(
                {
                    "data": data,
                    "model": name,
                    "fails": [c.name for c in checks.values() if not c.passed],
                    "silent_p_alive": None if silent is None else silent.value,
                    "silent_message": None if silent is None else silent.message,
                }
            )
    return rows


def evaluate_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The holdout results per data set and calibration end, and the guard at the end."""
    from retain.datasets import load_cdnow

    results, at_end = [], []
    for data, sample in DATASETS:
        tx = load_cdnow(sample=sample)
        for calibration_end in CALIBRATION_ENDS:
            results.append(evaluate(data, tx, calibration_end))
        at_end += guard_at_end(data, tx)
    return results, at_end


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _revision() -> str:
    """The retain measured: its commit and whether its source had uncommitted changes,
    or where it was imported from when that is not a git work tree."""
    import retain

    source = Path(retain.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=source
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", ".").splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"retain imported from {source}"
    note = f", with uncommitted changes to {len(dirty)} file(s) in it" if dirty else ""
    return f"retain at commit {head}{note}"


def markdown(
    results: list[dict[str, Any]], at_end: list[dict[str, Any]], seconds: float, command: str
) -> str:
    """The section for RESULTS.md / ACCURACY.md."""
    from run import machine

    lines = [
        TITLE,
        "",
        f"Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `{command}` "
        f"({seconds:.0f} s in all); {_revision()}.",
        f"Machine: {machine()}.",
        "",
        f"Data: `retain.datasets.load_cdnow`, sample and master; time unit weeks, purchases "
        f"merged per day; holdout from the day after the calibration end to {HOLDOUT_END}. "
        "Holdout log-likelihood: the sum over customers of log P(holdout purchase count | "
        "calibration history) (`retain.validate.compare`; higher is better). "
        "Guard: `retain.guard.check_fit` on the model fitted on the calibration summary, "
        "with Gamma-Gamma and the net revenue of the 365 days to the calibration end; "
        "kept: the first in compare's order (its choice first) that passes the guard. "
        "AUC: P(alive) at the calibration end ranking the customers who buy again in the "
        "holdout (Mann-Whitney, ties averaged; 0.5 is chance). Ranges: share of customers "
        "whose holdout purchases (distinct days) or net revenue lie in their 90% predictive "
        "range (`interval=0.9`) or in the 90% band of the mean (`confidence=0.9`).",
        "",
        "### The holdouts",
        "",
    ]
    lines += _table(
        [
            "data",
            "calibration end",
            "holdout weeks",
            "customers",
            "one-time buyers",
            "buy again",
            "one-time buyers who buy again",
            "holdout purchases",
            "holdout net revenue",
            "compare chose",
            "kept (guard)",
            "seconds",
        ],
        [
            [
                r["data"],
                r["calibration_end"],
                f"{r['weeks']:.1f}",
                f"{r['customers']:,}",
                f"{r['one_time']:,}",
                f"{r['buy_again']:.1%}",
                "-" if r["buy_again_one_time"] is None else f"{r['buy_again_one_time']:.1%}",
                f"{r['rows'][0]['actual']:,.0f}",
                f"{r['actual_revenue']:,.0f}",
                r["choice"]["model"],
                r["kept"] or "none",
                f"{r['seconds']:.1f}",
            ]
            for r in results
        ],
    )
    lines += ["", "### Holdout fit, choice and guard", ""]
    lines += _table(
        [
            "data",
            "calibration end",
            "model",
            "compare order",
            "holdout LL",
            "LL per customer",
            "predicted",
            "actual",
            "RMSE",
            "MAE",
            "next-purchase window coverage",
            "guard fails",
            "kept",
        ],
        [
            [
                r["data"],
                r["calibration_end"],
                m["model"],
                str(m["order"]),
                f"{m['holdout_ll']:,.1f}",
                f"{m['holdout_ll_mean']:.4f}",
                f"{m['predicted']:,.0f}",
                f"{m['actual']:,.0f}",
                _fmt(m["rmse"]),
                _fmt(m["mae"]),
                f"{_fmt(m['window_coverage'])} (n={m['window_customers']:,.0f})",
                ", ".join(m["fails"]) or "none",
                "**kept**" if m["kept"] else "",
            ]
            for r in results
            for m in r["rows"]
        ],
    )
    lines += ["", "### P(alive) and 90% ranges", ""]
    lines += _table(
        [
            "data",
            "calibration end",
            "model",
            "mean P(alive)",
            "AUC, all",
            "AUC, one-time buyers",
            "AUC, repeat buyers",
            "purchases in 90% range",
            "revenue in 90% range",
            "purchases in 90% band of the mean",
            "revenue in 90% band of the mean",
        ],
        [
            [
                r["data"],
                r["calibration_end"],
                m["model"],
                _fmt(m["p_alive_mean"]),
                _fmt(m["auc_all"]),
                _fmt(m["auc_one_time"]),
                _fmt(m["auc_repeat"]),
                f"{m['range_purchases']:.1%}",
                f"{m['range_revenue']:.1%}",
                f"{m['band_purchases']:.1%}",
                f"{m['band_revenue']:.1%}",
            ]
            for r in results
            for m in r["rows"]
        ],
    )
    lines += ["", "### Choice reasons", ""]
    for r in results:
        failing = [f"{m['model']}: {msg}" for m in r["rows"] for msg in m["fail_messages"]]
        lines.append(
            f"- **{r['data']}, calibrated to {r['calibration_end']}** — compare chose "
            f"{r['choice']['model']}: {r['choice']['reason']}. Guard: "
            + ("; ".join(failing) if failing else "every model passes")
            + f". Kept: {r['kept'] or 'none (every model fails the guard)'}."
        )
    if unchecked(results):
        lines += ["", unchecked(results)]
    lines += [
        "",
        f"### The guard on the whole history (fitted to {HOLDOUT_END}, no holdout)",
        "",
    ]
    lines += _table(
        ["data", "model", "guard fails", "mean P(alive) of one-time buyers silent > 365 days"],
        [
            [
                g["data"],
                g["model"],
                ", ".join(g["fails"]) or "none",
                "not checked" if g["silent_p_alive"] is None else f"{g['silent_p_alive']:.3f}",
            ]
            for g in at_end
        ],
    )
    lines += [""] + [
        f"- {g['data']}, {g['model']}: {g['silent_message']}"
        for g in at_end
        if "one_time_buyers" in g["fails"]
    ]
    caught = list(dict.fromkeys(w for r in results for w in r["warnings"]))
    if caught:
        lines += ["", "Warnings raised: " + "; ".join(f"`{w}`" for w in caught) + "."]
    return "\n".join(lines) + "\n"


def unchecked(results: list[dict[str, Any]]) -> str:
    """A sentence on the calibrations where the one_time_buyers check did not run."""
    missing = [
        f"{r['data']} to {r['calibration_end']}"
        for r in results
        if not all("one_time_buyers" in m["checks"] for m in r["rows"])
    ]
    if not missing:
        return ""
    return (
        f"The one_time_buyers check did not run ({', '.join(missing)}): it needs one-time "
        "buyers silent for over 365 days, and CDNOW's customers first bought in "
        "January-March 1997, so none had been by either calibration end. BG/NBD's "
        "P(alive) of 1 for every one-time buyer is caught only on the whole history "
        "(below)."
    )


def write(section: str, path: Path) -> None:
    """Write ``section`` to ``path``, keeping the notes block already in the file."""
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_OPEN in old and NOTES_CLOSE in old:
            notes = old[old.index(NOTES_OPEN) : old.index(NOTES_CLOSE) + len(NOTES_CLOSE)]
    path.write_text(section + (f"\n{notes}\n" if notes else ""))


def run(n_customers: int) -> list[dict]:
    """One row per data set, calibration end and model, for benchmarks/run.py; the full
    section (tables, reasons) is written to benchmarks/ACCURACY.md."""
    from run import peak_mb

    del n_customers  # CDNOW has a fixed size
    start = time.perf_counter()
    results, at_end = evaluate_all()
    seconds = time.perf_counter() - start
    command = "python benchmarks/run.py --only accuracy"
    write(markdown(results, at_end, seconds, command), ACCURACY_MD)
    rows = []
    for r in results:
        for m in r["rows"]:
            rows.append(
                {
                    "name": f"CDNOW {r['data']}, calibrated to {r['calibration_end']}, "
                    f"holdout to {HOLDOUT_END}: {m['model']}",
                    "seconds": round(r["seconds"], 2),
                    "peak_mb": round(peak_mb()),
                    "holdout_ll_per_customer": round(m["holdout_ll_mean"], 4),
                    "predicted": round(m["predicted"]),
                    "actual": round(m["actual"]),
                    "guard_fails": ", ".join(m["fails"]) or "none",
                    "kept": m["kept"],
                    "p_alive_mean": round(m["p_alive_mean"], 3),
                    "auc_all": None if m["auc_all"] is None else round(m["auc_all"], 3),
                    "auc_one_time": (
                        None if m["auc_one_time"] is None else round(m["auc_one_time"], 3)
                    ),
                    "purchases_in_90pct_range": round(m["range_purchases"], 3),
                    "revenue_in_90pct_range": round(m["range_revenue"], 3),
                    "note": "choice reasons and all columns: benchmarks/ACCURACY.md",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the section to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    results, at_end = evaluate_all()
    seconds = time.perf_counter() - start
    command = "python benchmarks/bench_accuracy.py" + (f" --out {args.out}" if args.out else "")
    section = markdown(results, at_end, seconds, command)
    print(section)
    if args.out:
        write(section, args.out)


if __name__ == "__main__":
    main()
