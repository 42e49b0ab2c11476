"""A store scored with a margin shows the same CLV everywhere: the overview (page, API and
report) shows the model's CLV as scored, never multiplied by the margin a second time."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.service import create_app, data  # noqa: E402
from retain.service.report import report_html  # noqa: E402
from retain.store import Store  # noqa: E402
from store_helpers import scored_copy  # noqa: E402

MARGIN = 0.5


@pytest.fixture(scope="module")
def half_margin_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample fitted and scored with a margin of 0.5."""
    return scored_copy(
        cdnow_sample_db, tmp_path_factory.mktemp("margin") / "half.duckdb", margin=MARGIN
    )


@pytest.fixture(scope="module")
def table(half_margin_db: Path) -> dict[str, float]:
    """What the scores table holds: the CLV of the scoring, margin included."""
    with Store(half_margin_db, read_only=True) as store:
        mean, median, total, revenue = store.con.execute(
            "SELECT avg(clv_12m), median(clv_12m), sum(clv_12m), "
            "(SELECT avg(r) FROM (SELECT sum(net_revenue) AS r FROM orders GROUP BY customer_id)) "
            "FROM customer_scores"
        ).fetchall()[0]
        one = store.con.execute(
            "SELECT customer_id, clv_12m FROM customer_scores ORDER BY clv_12m DESC LIMIT 1"
        ).fetchall()[0]
    return {
        "mean": mean,
        "median": median,
        "total": total,
        "revenue": revenue,
        "id": one[0],
        "one": one[1],
    }


@pytest.fixture(scope="module")
def client(half_margin_db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(half_margin_db, writes=False, warm=False)) as c:
        yield c


def test_overview_shows_the_scored_clv_once(half_margin_db: Path, table: dict) -> None:
    with Store(half_margin_db, read_only=True) as store:
        payload = data.metrics_payload(store)
    predicted = payload["predicted"]
    assert predicted["average_clv"] == pytest.approx(table["mean"])
    assert predicted["median_clv"] == pytest.approx(table["median"])
    assert predicted["total_clv"] == pytest.approx(table["total"])
    assert predicted["margin"] == MARGIN
    # the histogram adds up to the same total
    bins = payload["clv_distribution"]["bins"]
    assert sum(b["clv"] for b in bins) == pytest.approx(table["total"])


def test_historical_clv_takes_the_scored_margin_and_says_so(
    half_margin_db: Path, table: dict
) -> None:
    with Store(half_margin_db, read_only=True) as store:
        payload = data.metrics_payload(store)
        asked = data.metrics_payload(store, margin=0.3)
    assert payload["margin"]["historical"] == MARGIN and payload["margin"]["source"] == "scored"
    assert payload["overview"]["margin"] == MARGIN
    assert payload["overview"]["average_historical_clv"] == pytest.approx(MARGIN * table["revenue"])
    assert "margin 0.5" in payload["margin"]["text"] and "retain score" in payload["margin"]["text"]
    # a margin asked for applies to historical CLV; the scored CLV stays as scored, and
    # the page says which margin each is at
    assert asked["overview"]["average_historical_clv"] == pytest.approx(0.3 * table["revenue"])
    assert asked["predicted"]["average_clv"] == pytest.approx(table["mean"])
    assert "0.5" in asked["margin"]["text"] and "0.3" in asked["margin"]["text"]


def test_api_customer_page_and_report_agree(
    client: TestClient, half_margin_db: Path, table: dict
) -> None:
    body = client.get("/api/metrics").json()
    assert body["predicted"]["average_clv"] == pytest.approx(table["mean"])
    customer = client.get(f"/api/customers/{table['id']}").json()
    assert customer["scores"]["clv_12m"] == pytest.approx(table["one"])
    page = client.get("/").text
    assert f"{table['mean']:,.2f}" in page
    assert "margin 0.5" in page
    html = report_html(half_margin_db)
    assert f"{table['mean']:,.2f}" in html


def test_the_overview_says_when_its_churn_is_the_models_pages(half_margin_db: Path) -> None:
    with Store(half_margin_db, read_only=True) as store:
        default = data.metrics_payload(store)
        other = data.metrics_payload(store, window_days=default["models_window_days"] + 30)
        churn = data.models_payload(store)["lifespan"]["store_churn_rate"]
    assert default["overview"]["window_days"] == default["models_window_days"]
    assert default["overview"]["churn_rate"] == pytest.approx(churn)
    assert other["overview"]["window_days"] != other["models_window_days"]
