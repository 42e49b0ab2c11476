"""How the pages show numbers: chart titles and bins in words, the customer's scores with
labels and units, the order history on a time axis that says what it leaves out, and
tables that scroll inside a wrapper."""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.ingest import ingest  # noqa: E402
from retain.service import charts, create_app  # noqa: E402
from retain.store import Store  # noqa: E402

ORDERS = 60  # more than the 50 the customer page lists


def drawn(html: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="retain-charts">(.*?)</script>', html)
    assert found
    return dict(json.loads(found[1]))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("formatting")
    rows = ["order_id,customer_id,ordered_at,net_revenue"]
    rows += [
        f"f{i},frequent,2024-{1 + i // 28:02d}-{1 + i % 28:02d},{10 + i}" for i in range(ORDERS)
    ]
    rows += ["s1,seldom,2024-01-15,25.00"]
    (folder / "orders.csv").write_text("\n".join(rows) + "\n")
    path = folder / "store.duckdb"
    with Store(path) as store:
        ingest(store, folder / "orders.csv", format="orders", as_of="2024-03-31")
        # model scores as `retain score` writes them (the columns matter here, not the fit)
        store.con.execute(
            """
            CREATE TABLE customer_scores AS SELECT * FROM (VALUES
                ('frequent', 0.987, 12.5, 1234.5, 980.25, 1500.75, 'pnbd', DATE '2024-04-02'),
                ('seldom', 0.25, 0.4, 12.0, 0.0, 40.0, 'pnbd', DATE '2024-09-01')
            ) AS t(customer_id, p_alive, expected_purchases_365d, clv_12m, clv_low, clv_high,
                   model, next_purchase_date)
            """
        )
    with TestClient(create_app(path, writes=False, warm=False)) as served:
        yield served


def test_the_clv_chart_says_what_it_counts_in_words_with_even_bins() -> None:
    width = 20.56  # (99th percentile - 0) / 20, as the overview computes it
    bins = [
        {"low": i * width, "high": (i + 1) * width, "customers": 1, "open_ended": False}
        for i in range(19)
    ] + [{"low": 19 * width, "high": 900.0, "customers": 1, "open_ended": True}]
    payload = {
        "clv_distribution": {"basis": "predicted CLV (clv_12m)", "bins": bins, "customers": 20},
        "overview": {"revenue_by_period": [], "period": "month"},
    }
    spec = charts.overview_charts(payload)["clv-distribution"]
    assert spec["title"] == "Customers by predicted CLV, next 12 months"
    assert "clv_12m" not in json.dumps(spec) and "(" not in spec["title"]
    labels = spec["labels"]
    assert labels[-1].endswith("+")
    edges = [[float(x.replace(",", "")) for x in label.split("–")] for label in labels[:-1]]
    widths = {round(b - a, 6) for a, b in edges}
    assert len(widths) == 1, labels  # every bin reads as wide as the others
    assert all(a == pytest.approx(b) for (_, a), (b, _) in itertools.pairwise(edges))


def test_round_bins_keep_round_labels() -> None:
    bins = [{"low": 25.0 * i, "high": 25.0 * (i + 1), "customers": 1} for i in range(4)]
    payload = {
        "clv_distribution": {"basis": "historical CLV", "bins": bins, "customers": 4},
        "overview": {"revenue_by_period": [], "period": "month"},
    }
    assert charts.overview_charts(payload)["clv-distribution"]["labels"] == [
        "0–25",
        "25–50",
        "50–75",
        "75–100",
    ]


def test_all_scores_have_labels_and_units(client: TestClient) -> None:
    html = client.get("/customers/frequent").text
    table = re.search(r'<table class="kv" id="all-scores">(.*?)</table>', html, re.S)
    assert table, html
    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table[1]))
    for raw in ("p_alive", "clv_12m", "clv low", "expected purchases 365d", "next purchase date"):
        assert raw not in table[1]
    assert rows["Predicted CLV, next 12 months"] == "$1,234.50"  # the store's currency: USD
    assert rows["Chance the customer is still active, P(alive)"] == "0.987 (98.7%)"
    assert rows["Expected purchases, next 365 days"] == "12.50 purchases"
    assert rows["CLV, 90% of outcomes: from"] == "$980.25"
    assert rows["Next purchase expected on"] == "2024-04-02"
    assert rows["Model"] == "Pareto/NBD"


def test_the_history_chart_says_it_shows_the_latest_orders_on_a_time_axis(
    client: TestClient,
) -> None:
    html = client.get("/customers/frequent").text
    spec = drawn(html)["customer-history"]
    assert spec["title"] == f"Net revenue per order: the latest 50 of {ORDERS} orders"
    assert spec["xType"] == "time"
    points = spec["datasets"][0]["data"]
    assert len(points) == 50
    xs = [p["x"] for p in points]
    assert xs == sorted(xs)
    # 2024-03-04 (the 60th order, f59) at midnight UTC, in milliseconds
    assert xs[-1] == 1709510400000 and points[-1]["y"] == pytest.approx(69.0)
    assert f"The latest 50 of {ORDERS} orders." in html
    one = drawn(client.get("/customers/seldom").text)["customer-history"]
    assert one["title"] == "Net revenue per order: their one order"


@pytest.mark.parametrize("path", ["/customers", "/customers/frequent", "/at-risk", "/segments"])
def test_tables_scroll_inside_a_wrapper(client: TestClient, path: str) -> None:
    html = client.get(path).text
    tables = html.count('<table class="data"')
    assert tables and html.count('<div class="table-wrap">\n<table class="data"') == tables
    css = client.get("/static/retain.css").text
    assert re.search(r"\.table-wrap \{[^}]*overflow-x: auto", css)


def test_money_carries_the_reporting_currency() -> None:
    from retain.service.render import money

    assert money(1234.5, 2, "USD") == "$1,234.50"
    assert money(-5, 2, "EUR") == "-€5.00"
    assert money(-0.001, 2, "EUR") == "€0.00"  # no minus on a rounded zero
    assert money(7, 0, "THB") == "฿7"
    assert money(12.5, 2, "AED") == "12.50 AED"
    assert money(12.5) == "12.50" and money(None, 2, "USD") == "–"
