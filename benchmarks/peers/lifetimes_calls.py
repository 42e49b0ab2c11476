"""lifetimes 0.11.3's side of the timed calls, run by the peer venv's interpreter.

    benchmarks/.venv-peers/bin/python benchmarks/peers/lifetimes_calls.py CALL ARGS...

The same calls, inputs and horizons as ``benchmarks/calls.py`` (retain's side):

- ``summarize ORDERS.parquet END``: ``summary_data_from_transaction_data``, days.
- ``fit_score SUMMARY.parquet``: ``BetaGeoFitter`` and ``GammaGammaFitter`` fits (the
  latter on the repeat customers, as retain's), then P(alive), expected purchases in
  90 days and the CLV over 12 months (its monthly steps) at the monthly rate that makes
  retain's 10% a year.
- ``parquet_to_scores ORDERS.parquet END``: all of it from the file, the read included.
- ``pnbd_fit SUMMARY.parquet``: ``ParetoNBDFitter`` (slow: used up to 200,000 customers).

Each prints one JSON line (:func:`harness.report`); ``seconds`` is the timed work.
"""

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter
from lifetimes.utils import summary_data_from_transaction_data

from harness import report

MONTHLY_RATE = 1.1 ** (1 / 12) - 1  # retain's 10% a year, per month as lifetimes wants
COLUMNS = ["customer_id", "ordered_at", "net_revenue"]


def summarize(orders: pd.DataFrame, end: str) -> pd.DataFrame:
    return summary_data_from_transaction_data(
        orders,
        "customer_id",
        "ordered_at",
        monetary_value_col="net_revenue",
        freq="D",
        observation_period_end=end,
    )


def fit_and_score(summary: pd.DataFrame) -> tuple[dict, dict]:
    x, t_x, T, m = (summary[c] for c in ("frequency", "recency", "T", "monetary_value"))
    stages = {}
    start = time.perf_counter()
    bgf = BetaGeoFitter().fit(x, t_x, T)
    stages["bgnbd_fit_s"] = time.perf_counter() - start
    repeat = summary[(x > 0) & (m > 0)]
    start = time.perf_counter()
    ggf = GammaGammaFitter().fit(repeat["frequency"], repeat["monetary_value"])
    stages["gamma_gamma_fit_s"] = time.perf_counter() - start
    start = time.perf_counter()
    p_alive = bgf.conditional_probability_alive(x, t_x, T)
    expected = bgf.conditional_expected_number_of_purchases_up_to_time(90, x, t_x, T)
    clv = ggf.customer_lifetime_value(
        bgf, x, t_x, T, m, time=12, discount_rate=MONTHLY_RATE, freq="D"
    )
    stages["score_s"] = time.perf_counter() - start
    return stages, {
        "customers": len(summary),
        "frequency_total": float(x.sum()),
        "p_alive_mean": float(p_alive.mean()),
        "expected_90d_total": float(expected.sum()),
        "clv_total": float(clv.sum()),
        "bgnbd_params": {k: round(float(v), 4) for k, v in bgf.params_.items()},
    }


def read_summary(path: str) -> pd.DataFrame:
    # retain's summary, as its side reads it: same customers, same (x, t_x, T, monetary)
    return pd.read_parquet(path).rename(columns={"monetary": "monetary_value"})


def main(argv: list) -> None:
    warnings.simplefilter("ignore")
    call, args = argv[0], argv[1:]
    if call == "summarize":
        orders = pd.read_parquet(args[0], columns=COLUMNS)
        start = time.perf_counter()
        summary = summarize(orders, args[1])
        seconds = time.perf_counter() - start
        report(seconds, customers=len(summary), frequency_total=float(summary["frequency"].sum()))
    elif call == "fit_score":
        summary = read_summary(args[0])
        start = time.perf_counter()
        stages, figures = fit_and_score(summary)
        report(time.perf_counter() - start, **stages, **figures)
    elif call == "parquet_to_scores":
        start = time.perf_counter()
        summary = summarize(pd.read_parquet(args[0], columns=COLUMNS), args[1])
        _, figures = fit_and_score(summary)
        report(time.perf_counter() - start, **figures)
    elif call == "pnbd_fit":
        summary = read_summary(args[0])
        start = time.perf_counter()
        pnbd = ParetoNBDFitter().fit(summary["frequency"], summary["recency"], summary["T"])
        report(
            time.perf_counter() - start,
            pnbd_params={k: round(float(v), 4) for k, v in pnbd.params_.items()},
        )
    else:
        raise SystemExit(f"unknown call {call!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
