"""The overview the dashboard shows, the metrics report and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metrics_helpers import store_with
from retain.cli import app
from retain.metrics import OVERVIEW_KEYS, REPORT_PERIOD_COLUMNS, metrics_report, overview
from retain.store import Store

ORDERS = [
    ("a", "2024-01-05", 10, "search"),
    ("a", "2024-02-05", 30),
    ("b", "2024-01-20", 20, "social"),
    ("c", "2024-02-10", 60, "search"),
    ("c", "2024-03-10", 40),
]
SPEND = [("2024-01-01", "search", 40), ("2024-02-01", "social", 30)]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics") / "store.duckdb"
    memory = store_with(ORDERS, spend=SPEND)
    memory.con.execute(f"ATTACH '{path}' AS out")
    memory.con.execute("COPY FROM DATABASE memory TO out")
    memory.con.execute("DETACH out")
    memory.close()
    return path


def test_overview_keys_and_values_by_hand() -> None:
    store = store_with(ORDERS, spend=SPEND)
    headline = overview(store, margin=0.5, as_of="2024-03-31")
    assert tuple(headline) == OVERVIEW_KEYS
    assert (headline["customers"], headline["orders"], headline["net_revenue"]) == (3, 5, 160)
    assert headline["aov"] == 32
    # per customer 40, 20, 100: mean 53.33, median 40, times the margin
    assert headline["average_historical_clv"] == pytest.approx(0.5 * 160 / 3)
    assert headline["median_historical_clv"] == pytest.approx(20)
    assert headline["repeat_purchase_rate"] == pytest.approx(100 * 2 / 3)
    # two gaps between a customer's orders: too few for a rhythm, so a 365-day window,
    # within which nobody can have lapsed yet: no retention to show
    assert headline["window_days"] == 365 and "too few repeat purchases" in headline["window_rule"]
    assert headline["retention_rate"] is None and headline["retention_period"] is None
    assert "not measured yet" in headline["retention_definition"]
    assert headline["active_customers"] == 3
    # spend 70 for 3 customers; CLV 0.5 x 160 / 3
    assert headline["cac"] == pytest.approx(70 / 3)
    assert headline["clv_cac"] == pytest.approx((80 / 3) / (70 / 3))
    feb = headline["revenue_by_period"][1]
    assert feb == {
        "period": "2024-02",
        "net_revenue": 90.0,
        "new_customer_revenue": 60.0,
        "returning_customer_revenue": 30.0,
        "returning_revenue_share": pytest.approx(100 / 3),
        "complete": True,
    }
    json.dumps(headline)  # plain JSON types only, no NaN


def test_headline_retention_pools_the_year_by_hand() -> None:
    """30-day window. Feb: a, b at its start; a still, b lapsed, c new: (2 - 1) / 2.
    Mar: a, c at its start; only c at its end: 1 / 2. Pooled: (1 + 1) / (2 + 2)."""
    store = store_with(ORDERS)
    headline = overview(store, window_days=30, as_of="2024-03-31")
    assert headline["window_days"] == 30 and headline["window_rule"] == "30 days, as set"
    assert headline["retention_periods"] == ["2024-02", "2024-03"]
    assert headline["retention_period"] == "2024-02 to 2024-03"
    assert headline["retention_rate"] == 50 and headline["churn_rate"] == 50
    assert (headline["latest_retention_period"], headline["latest_retention_rate"]) == (
        "2024-03",
        50,
    )
    assert "ordered in the last 30 days" in headline["retention_definition"]
    assert headline["active_customers"] == 1  # c, on 10 March
    # the formula CLV measures the same churn
    report = metrics_report(store, window_days=30, as_of="2024-03-31")
    assert report["formula_clv"]["churn_rate"] == headline["churn_rate"]
    assert report["formula_clv"]["periods"] == headline["retention_periods"]


def test_metrics_report_has_everything_retain_metrics_prints() -> None:
    store = store_with(ORDERS)
    report = metrics_report(store, "month", margin=0.5, window_days=30, top=2, as_of="2024-03-31")
    assert set(report) == {"overview", "formula_clv", "periods", "top_customers"}
    assert list(report["periods"].columns) == REPORT_PERIOD_COLUMNS
    assert report["periods"]["orders"].tolist() == [2, 2, 1]
    assert report["top_customers"]["customer_id"].tolist() == ["c", "a"]
    assert report["formula_clv"]["periods"] == ["2024-02", "2024-03"]


runner = CliRunner()


def _run(*args: str) -> object:
    return runner.invoke(app, list(args))


def test_cli_metrics_text_and_json(db: Path) -> None:
    result = _run(
        "metrics",
        "--db",
        str(db),
        "--margin",
        "0.5",
        "--as-of",
        "2024-03-31",
        "--window-days",
        "30",
    )
    assert result.exit_code == 0, result.output
    assert "repeat purchase rate: 66.7%" in result.output
    assert "retention 2024-02 to 2024-03: 50.0% (churn 50.0%)" in result.output
    payload = json.loads(_run("metrics", "--db", str(db), "--json", "--period", "quarter").output)
    assert payload["overview"]["customers"] == 3
    assert payload["periods"][0]["period"] == "2024Q1"


def test_cli_cohorts_acquisition_alerts(db: Path) -> None:
    result = _run("cohorts", "--db", str(db), "--as-of", "2024-03-31")
    assert result.exit_code == 0, result.output
    assert "2024-01" in result.output and "100.0" in result.output
    rows = json.loads(_run("cohorts", "--db", str(db), "--json").output)
    assert rows[0]["cohort"] == "2024-01" and rows[0]["active_share"] == 100
    result = _run("acquisition", "--db", str(db), "--as-of", "2024-03-31")
    assert result.exit_code == 0, result.output
    assert "search" in result.output
    payload = json.loads(_run("acquisition", "--db", str(db), "--json").output)
    channels = {row["channel"]: row for row in payload["channels"]}
    assert channels["search"]["cac"] == 20 and channels["social"]["cac"] == 30
    result = _run("alerts", "--db", str(db))
    assert result.exit_code == 0 and "not enough history" in result.output
    payload = json.loads(_run("alerts", "--db", str(db), "--json").output)
    assert payload["alerts"] == [] and payload["checked"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metrics", "--period", "week"], "unknown period"),
        (["metrics", "--margin", "30"], "write 0.3"),
        (["cohorts", "--value", "x"], "unknown cohort value"),
        (["alerts", "--window-days", "7"], "at least 30 days"),
        (["acquisition", "--as-of", "someday"], "unreadable observation date"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(db: Path, args: list[str], message: str) -> None:
    result = _run(*args, "--db", str(db))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_cli_on_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    Store(path).close()
    result = _run("metrics", "--db", str(path))
    assert result.exit_code == 2 and "holds no orders yet" in result.output


def test_cli_on_the_ingested_cdnow_sample(cdnow_sample_db: Path) -> None:
    """The store the CDNOW ingest builds (2,357 customers, to 30 June 1998)."""
    payload = json.loads(_run("metrics", "--db", str(cdnow_sample_db), "--json").output)
    assert payload["overview"]["customers"] == 2_357
    assert payload["overview"]["as_of"] == "1998-06-30"
    result = _run("acquisition", "--db", str(cdnow_sample_db))
    assert result.exit_code == 0 and "no marketing spend" in result.output
