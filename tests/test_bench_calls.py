"""The benchmarks' timed calls do the work they claim: DuckDB's summary query alone is
retain's summary, and lifetimes' side computes the same P(alive) and 90-day purchases
from the same summary file (when the peer venv, ``make bench``'s, is there)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import calls  # noqa: E402
import harness  # noqa: E402
from generate import write  # noqa: E402

END = "2026-01-01"


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bench-calls")
    write(400, folder, lines=False)
    return folder / "orders.parquet"


def test_the_duckdb_summary_query_is_retains_summary(orders) -> None:
    summary = calls.summarize(calls.read_orders(str(orders)), END)
    end = dt.datetime.fromisoformat(END)
    alone = (
        duckdb.connect()
        .execute(
            calls.SUMMARY_QUERY,
            {"path": str(orders), "end": end, "cutoff": end + dt.timedelta(days=1)},
        )
        .df()
        .set_index("customer_id")
    )
    assert list(alone.index) == list(summary.index)
    for column in ("frequency", "recency", "T", "monetary"):
        np.testing.assert_allclose(alone[column], summary[column], err_msg=column)


def _call(command: list[str]) -> dict:
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_both_sides_score_the_same_customers_alike(orders, tmp_path) -> None:
    peer = harness.peer_python()
    if peer is None:
        pytest.skip("no benchmarks/.venv-peers (make bench makes it)")
    summary = tmp_path / "summary.parquet"
    _call(harness.python_call(BENCH / "calls.py", "summary_file", orders, END, summary))
    ours = _call(harness.python_call(BENCH / "calls.py", "fit_score", summary))
    theirs = _call(
        harness.python_call(
            BENCH / "peers" / "lifetimes_calls.py", "fit_score", summary, python=peer
        )
    )
    assert (ours["customers"], ours["frequency_total"]) == (
        theirs["customers"],
        theirs["frequency_total"],
    )
    assert ours["p_alive_mean"] == pytest.approx(theirs["p_alive_mean"], rel=1e-5)
    assert ours["expected_90d_total"] == pytest.approx(theirs["expected_90d_total"], rel=1e-4)
    # the CLV differs by the discounting only (lifetimes: monthly steps), a few percent
    assert ours["clv_total"] == pytest.approx(theirs["clv_total"], rel=0.05)
