"""retain's side of the timed calls: one call per process, as benchmarks/harness.py says.

    python benchmarks/calls.py CALL ARGS...

- ``summarize ORDERS.parquet END``: ``retain.summarize`` of the orders read from Parquet
  (the read not timed), observation end END, in days.
- ``pnbd_fit SUMMARY.parquet``: the Pareto/NBD fit alone.
- ``summarize_store STORE.duckdb END``: ``retain.summarize`` of the store's orders.
- ``fit_score SUMMARY.parquet``: BG/NBD and Gamma-Gamma fits, then P(alive), expected
  purchases in 90 days and the 12-month CLV (10% a year) of every customer.
- ``parquet_to_scores ORDERS.parquet END``: all of it from the file, the read included.
- ``duckdb_summary ORDERS.parquet END``: DuckDB's summary query alone on the file, its
  columns fetched into NumPy: the floor for ``parquet_to_scores``.
- ``summary_file ORDERS.parquet END OUT.parquet``: writes the summary (not timed).
- ``models SUMMARY.parquet``: retain's other model timings (Pareto/NBD, the ranges, the
  mean-CLV band), one call each in this one process.

Each prints one JSON line (:func:`harness.report`); ``seconds`` is the timed work, the
imports and the reading of a summary file before it (the peer's side does the same).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import report  # noqa: E402

DISCOUNT_RATE = 0.1  # per year; lifetimes is given the same rate per month
COLUMNS = ["customer_id", "ordered_at", "net_revenue"]


def read_orders(path: str) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=COLUMNS)


def read_summary(path: str) -> Any:
    import pandas as pd

    summary = pd.read_parquet(path).set_index("customer_id")
    summary.attrs.update({"unit": "D", "grain": "D"})
    return summary


def summarize(orders: Any, end: str) -> Any:
    import retain

    return retain.summarize(orders, unit="D", grain="D", observation_end=end)


def fit_and_score(summary: Any) -> tuple[Any, dict[str, float]]:
    """The compared work: both fits, then P(alive), 90-day purchases, 12-month CLV."""
    from retain.models import BetaGeo, GammaGamma

    stages: dict[str, float] = {}
    start = time.perf_counter()
    bg = BetaGeo().fit(summary)
    stages["bgnbd_fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    gg = GammaGamma().fit(summary)
    stages["gamma_gamma_fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    scores = bg.score(
        summary,
        gamma_gamma=gg,
        horizons=("90D",),
        clv_horizon="12M",
        discount_rate=DISCOUNT_RATE,
        interval=None,
        next_horizon=None,
    )
    stages["score_s"] = time.perf_counter() - start
    return scores, stages


def agreement(scores: Any, summary: Any) -> dict[str, float]:
    """Totals that show both sides computed the same things for the same customers."""
    return {
        "customers": len(summary),
        "frequency_total": float(summary["frequency"].sum()),
        "p_alive_mean": float(scores["p_alive"].mean()),
        "expected_90d_total": float(scores["expected_purchases_90d"].sum()),
        "clv_total": float(scores["clv"].sum()),
    }


SUMMARY_QUERY = """
WITH periods AS (
    SELECT customer_id, date_trunc('day', ordered_at) AS period, sum(net_revenue) AS amount
    FROM read_parquet($path)
    WHERE customer_id IS NOT NULL AND ordered_at IS NOT NULL AND ordered_at < $cutoff
    GROUP BY customer_id, period
)
SELECT
    customer_id,
    count(*) - 1                                              AS frequency,
    date_diff('day', min(period), max(period))                AS recency,
    date_diff('day', min(period), CAST($end AS TIMESTAMP))     AS T,
    CASE WHEN count(*) > 1
         THEN (sum(amount) - arg_min(amount, period)) / (count(*) - 1)
         ELSE 0.0 END                                         AS monetary
FROM periods
GROUP BY customer_id
ORDER BY customer_id
"""


def duckdb_summary(path: str, end: str) -> dict[str, Any]:
    import datetime as dt

    import duckdb

    end_day = dt.datetime.fromisoformat(end)
    con = duckdb.connect()
    start = time.perf_counter()
    arrays = con.execute(
        SUMMARY_QUERY,
        {"path": path, "end": end_day, "cutoff": end_day + dt.timedelta(days=1)},
    ).fetchnumpy()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "customers": len(arrays["customer_id"]),
        "frequency_total": float(sum(arrays["frequency"].tolist())),
    }


def models(summary: Any) -> dict[str, float]:
    """retain's own model timings beyond the compared work, one call each."""
    from retain.models import BetaGeo, GammaGamma, ParetoNBD

    out: dict[str, float] = {}

    def timed(key: str, func: Any) -> Any:
        start = time.perf_counter()
        result = func()
        out[key] = time.perf_counter() - start
        return result

    bg = timed("bgnbd_fit_s", lambda: BetaGeo().fit(summary))
    pn = timed("pnbd_fit_s", lambda: ParetoNBD().fit(summary))
    gg = timed("gamma_gamma_fit_s", lambda: GammaGamma().fit(summary))

    def score(model: Any, interval: float | None, confidence: float | None = None) -> Any:
        return model.score(
            summary,
            gamma_gamma=gg,
            discount_rate=DISCOUNT_RATE,
            interval=interval,
            confidence=confidence,
        )

    full = timed("score_all_s", lambda: score(bg, None))
    timed("score_ranges_s", lambda: score(bg, 0.9))
    timed("score_ranges_band_s", lambda: score(bg, 0.9, 0.9))
    timed("pnbd_score_s", lambda: score(pn, None))
    timed("pnbd_score_ranges_s", lambda: score(pn, 0.9))
    out["customers_with_a_next_purchase_date"] = int(full["next_purchase_within"].sum())
    for name, model in (("bgnbd", bg), ("pnbd", pn)):
        out[f"{name}_params"] = {k: round(v, 4) for k, v in model.params_.items()}  # type: ignore[assignment]
    return out


def main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")
    call, args = argv[0], argv[1:]
    if call != "duckdb_summary":
        # imported before the clock starts, as the peer's script imports lifetimes: the
        # imports are in the process's wall time, which the parent records beside; with
        # them the libraries retain loads on first use (DuckDB with the first summary,
        # SciPy's optimiser with the first fit), which lifetimes loads with its import
        import duckdb  # noqa: F401
        import pyarrow.parquet  # noqa: F401
        import scipy.optimize
        import scipy.special  # noqa: F401

        import retain
        import retain.models
    if call == "summarize":
        orders = read_orders(args[0])
        start = time.perf_counter()
        summary = summarize(orders, args[1])
        seconds = time.perf_counter() - start
        report(seconds, customers=len(summary), frequency_total=float(summary["frequency"].sum()))
    elif call == "fit_score":
        summary = read_summary(args[0])
        start = time.perf_counter()
        scores, stages = fit_and_score(summary)
        seconds = time.perf_counter() - start
        report(seconds, **stages, **agreement(scores, summary))
    elif call == "parquet_to_scores":
        start = time.perf_counter()
        summary = summarize(read_orders(args[0]), args[1])
        scores, stages = fit_and_score(summary)
        seconds = time.perf_counter() - start
        report(seconds, **agreement(scores, summary))
    elif call == "duckdb_summary":
        figures = duckdb_summary(args[0], args[1])
        report(figures.pop("seconds"), **figures)
    elif call == "pnbd_fit":
        from retain.models import ParetoNBD

        summary = read_summary(args[0])
        start = time.perf_counter()
        pnbd = ParetoNBD().fit(summary)
        seconds = time.perf_counter() - start
        report(seconds, pnbd_params={k: round(v, 4) for k, v in pnbd.params_.items()})
    elif call == "summarize_store":
        with retain.Store(args[0], read_only=True) as store:
            start = time.perf_counter()
            summary = retain.summarize(store, unit="D", grain="D", observation_end=args[1])
            seconds = time.perf_counter() - start
            orders = store.scalar("SELECT count(*) FROM orders")
        report(seconds, customers=len(summary), orders=orders)
    elif call == "summary_file":
        # not timed: the summary both sides of ``fit_score`` read
        summary = summarize(read_orders(args[0]), args[1])
        summary.reset_index().to_parquet(args[2])
        report(0.0, customers=len(summary))
    elif call == "models":
        summary = read_summary(args[0])
        start = time.perf_counter()
        figures = models(summary)
        report(time.perf_counter() - start, **figures)
    else:
        raise SystemExit(f"unknown call {call!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
