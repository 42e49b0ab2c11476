"""The JSON API and the pages, through the ASGI test client.

A tiny hand-made store pins the numbers (every figure below is worked out by
hand from the orders written here); the CDNOW sample checks the pages on real
data and that each page shows what its API twin returns.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.ingest import ingest  # noqa: E402
from retain.service import ServiceError, check_bind, create_app, resolve_api_key  # noqa: E402
from retain.service.app import is_loopback  # noqa: E402
from retain.store import Store  # noqa: E402
from store_helpers import scored_copy, store_of  # noqa: E402

KEY = "a-test-key-of-enough-length"
LOOPBACK = ("127.0.0.1", 50000)
ELSEWHERE = ("203.0.113.9", 50000)

ORDERS = """order_id,customer_id,ordered_at,net_revenue,channel
o1,a,2024-01-10,10.00,web
o2,a,2024-03-10,30.00,web
o3,b,2024-02-01,5.50,shop
o4,c,2024-01-05,20.00,web
o5,c,2024-02-05,20.00,web
o6,c,2024-03-05,20.00,web
"""
LINES = """order_id,sku,name,quantity,unit_price
o1,TEA,Green tea,1,10
o1,CUP,Tea cup,1,0
o2,TEA,Green tea,1,10
o2,CUP,Tea cup,2,10
o3,TEA,Green tea,1,5.5
o4,POT,Teapot,1,20
o5,TEA,Green tea,1,10
o5,CUP,Tea cup,1,10
o6,POT,Teapot,1,20
"""
CUSTOMERS = """customer_id,email,name,accepts_marketing
a,Ana@Example.com,Ana,yes
b,bo@example.com,Bo,no
"""


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(
        tmp_path_factory.mktemp("tiny"), orders=ORDERS, lines=LINES, customers=CUSTOMERS
    )


@pytest.fixture(scope="module")
def tiny(tiny_db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_db, KEY, warm=False), client=LOOPBACK) as client:
        yield client


@contextlib.contextmanager
def serve_copy(
    db: Path,
    tmp_path: Path,
    api_key: str | None = KEY,
    *,
    client: tuple[str, int] = LOOPBACK,
    raise_server_exceptions: bool = True,
    **options: Any,
) -> Iterator[TestClient]:
    """A client over a fresh copy of ``db``: for tests that write to it, or that open it
    otherwise than a module's client holds it. ``options`` go to :func:`create_app`."""
    path = tmp_path / f"copy-{db.name}"
    shutil.copy(db, path)
    app = create_app(path, api_key, warm=False, **options)
    with TestClient(app, client=client, raise_server_exceptions=raise_server_exceptions) as served:
        yield served


@pytest.fixture
def writable(tiny_db: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client over a fresh copy of the tiny store, for tests that write."""
    with serve_copy(tiny_db, tmp_path, client=ELSEWHERE) as client:
        yield client


@pytest.fixture(scope="module")
def sample(cdnow_sample_db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(cdnow_sample_db, writes=False), client=LOOPBACK) as client:
        yield client


# -- one customer ------------------------------------------------------------------------
def test_customer_orders_summary_by_hand(tiny: TestClient) -> None:
    body = tiny.get("/api/customers/a").json()
    assert body["customer_id"] == "a"
    assert body["orders"]["orders"] == 2
    assert body["orders"]["net_revenue"] == pytest.approx(40.0)
    assert body["orders"]["aov"] == pytest.approx(20.0)
    assert body["orders"]["first_order_at"].startswith("2024-01-10")
    assert body["orders"]["last_order_at"].startswith("2024-03-10")
    # the observation day is the last order, 2024-03-10: 0 days since a's last order
    assert body["orders"]["days_since_last_order"] == 0
    assert body["profile"]["email"] == "ana@example.com"  # lower-cased by the ingest
    assert body["segment"]["name"] and body["segment"]["action"]
    assert body["churn"]["risk"] in ("low", "medium", "high", "lost")
    assert "history" not in body


def test_customer_history_newest_first_with_products(tiny: TestClient) -> None:
    body = tiny.get("/api/customers/a", params={"history": 5}).json()
    assert [h["order_id"] for h in body["history"]] == ["o2", "o1"]
    assert sorted(body["history"][1]["products"]) == ["Green tea", "Tea cup"]


def test_unknown_customer_is_a_json_404(tiny: TestClient) -> None:
    response = tiny.get("/api/customers/zz")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert "zz" in response.json()["detail"]


def test_without_model_scores_the_customer_says_what_to_run(tiny: TestClient) -> None:
    body = tiny.get("/api/customers/c").json()
    assert body["scores"] is None
    assert any("retain fit" in note for note in body["notes"])


def test_customer_recommendations_leave_out_what_they_own(tiny: TestClient) -> None:
    items = tiny.get("/api/customers/b").json()["recommendations"]["items"]
    skus = [i["sku"] for i in items]
    assert "TEA" not in skus  # b bought tea
    assert skus and all(i["reason"] for i in items)


def test_customer_recommendations_are_the_ranking_of_every_customer_at_once(
    tmp_path: Path,
) -> None:
    """Each customer's recommendations are ranked on their first lookup: the same products,
    scores, reasons and kinds as ranking all the store's customers at once."""
    from recommend_helpers import shop_store
    from retain.recommend import recommend_for_customers

    db = tmp_path / "shop.duckdb"
    with shop_store(db, n_customers=300) as store:
        ids = store.query("SELECT DISTINCT customer_id FROM orders")["customer_id"].tolist()
        frame = recommend_for_customers(store, ids, 5)
    expected = {
        cid: rows[["sku", "name", "score", "reason", "kind"]].to_dict(orient="records")
        for cid, rows in frame.groupby("customer_id", sort=False)
    }
    with TestClient(create_app(db, KEY, warm=False), client=LOOPBACK) as client:
        for customer_id in ids:
            body = client.get(f"/api/customers/{customer_id}").json()["recommendations"]
            priced = [{k: v for k, v in item.items() if k != "price"} for item in body["items"]]
            assert priced == expected[customer_id], customer_id
            assert (body["tier"], body["note"]) == (None, None)
            assert all(item["price"] > 0 for item in body["items"])
        status = client.get("/api/status").json()["recommendations"]
        assert status["customers_ranked"] == status["customers"] == len(ids)


# -- lists ---------------------------------------------------------------------------------
def test_customer_list_sorts_and_pages(tiny: TestClient) -> None:
    first = tiny.get("/api/customers", params={"sort": "net_revenue", "limit": 2}).json()
    assert first["total"] == 3
    assert [c["customer_id"] for c in first["customers"]] == ["c", "a"]  # 60 > 40 > 5.50
    assert first["previous"] is None and first["next"].endswith("offset=2")
    second = tiny.get("/api/customers?" + first["next"]).json()
    assert [c["customer_id"] for c in second["customers"]] == ["b"]
    assert second["next"] is None and second["previous"].endswith("offset=0")


def test_customer_list_filters(tiny: TestClient) -> None:
    by_email = tiny.get("/api/customers", params={"q": "BO@"}).json()
    assert [c["customer_id"] for c in by_email["customers"]] == ["b"]
    segment = tiny.get("/api/customers/c").json()["segment"]["name"]
    listed = tiny.get("/api/customers", params={"segment": segment.upper()}).json()
    assert "c" in [c["customer_id"] for c in listed["customers"]]
    assert all(c["segment"] == segment for c in listed["customers"])


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"sort": "height"}, "unknown sort"),
        ({"segment": "Giants"}, "unknown segment"),
        ({"risk": "severe"}, "unknown risk level"),
        ({"limit": 0}, "limit"),
    ],
)
def test_customer_list_rejects_bad_parameters(
    tiny: TestClient, params: dict[str, object], words: str
) -> None:
    response = tiny.get("/api/customers", params=params)
    assert response.status_code == 422
    assert words in json.dumps(response.json())


@pytest.mark.parametrize("path", ["/api/metrics", "/api/alerts", "/"])
def test_a_huge_activity_window_is_refused(tiny: TestClient, path: str) -> None:
    response = tiny.get(path, params={"window_days": 99_999_999_999})
    assert response.status_code == 422
    assert "window_days" in response.text


def test_page_links_keep_the_search_text(tiny_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    shutil.copy(tiny_db, path)
    (tmp_path / "more.csv").write_text(
        "order_id,customer_id,ordered_at,net_revenue\np1,x+1,2024-03-01,5\np2,x+2,2024-03-02,6\n"
    )
    with Store(path) as store:
        ingest(store, tmp_path / "more.csv", format="orders", as_of="2024-03-31")
    with TestClient(create_app(path, warm=False)) as client:
        first = client.get("/api/customers", params={"q": "x+", "limit": 1}).json()
        assert first["total"] == 2
        second = client.get("/api/customers?" + first["next"]).json()
        assert second["q"] == "x+" and second["total"] == 2
        assert second["customers"][0]["customer_id"] != first["customers"][0]["customer_id"]
        back = client.get("/api/customers?" + second["previous"]).json()
        assert back["customers"] == first["customers"]


# -- pages and their twins -----------------------------------------------------------------
def test_metrics_match_the_orders(sample: TestClient) -> None:
    from retain.datasets import load_cdnow

    orders = load_cdnow(sample=True)
    body = sample.get("/api/metrics").json()
    assert body["overview"]["customers"] == 2357  # the CDNOW sample's 2,357 customers
    assert body["overview"]["net_revenue"] == pytest.approx(orders["net_revenue"].sum())
    dist = body["clv_distribution"]
    assert sum(b["customers"] for b in dist["bins"]) == 2357
    assert body["predicted"] is None and body["notes"]


def test_cohorts_cover_every_customer(sample: TestClient) -> None:
    body = sample.get("/api/cohorts").json()
    # CDNOW's customers all made their first purchase in the first quarter of 1997
    assert body["cohorts"] == ["1997-01", "1997-02", "1997-03"]
    assert sum(body["sizes"]) == 2357
    assert all(row[0] == pytest.approx(100.0) for row in body["active_share"])


def test_segments_and_grid_cover_every_customer(sample: TestClient) -> None:
    body = sample.get("/api/segments").json()
    assert sum(s["customers"] for s in body["segments"]) == 2357
    assert sum(c["customers"] for c in body["grid"]) == 2357


def test_at_risk_lists_only_that_risk_or_worse(sample: TestClient) -> None:
    body = sample.get("/api/at-risk", params={"min_risk": "lost", "limit": 20}).json()
    assert body["customers"] and {c["risk"] for c in body["customers"]} == {"lost"}
    # the page counts the win-back list itself (the CLI's list), not every lost customer
    from retain.segments import winback_list

    with Store(sample.app.state.service.db_path, read_only=True) as store:  # type: ignore[attr-defined]
        listed = winback_list(store, min_risk="lost", limit=20)
    assert body["total"] == listed.attrs["total"] <= body["by_risk"]["lost"]
    assert body["value_at_stake"] == pytest.approx(listed.attrs["value_at_stake"])


@pytest.mark.parametrize(
    ("page", "twin"),
    [
        ("/", "/api/metrics"),
        ("/cohorts", "/api/cohorts"),
        ("/segments", "/api/segments"),
        ("/at-risk", "/api/at-risk"),
        ("/models", "/api/models"),
    ],
)
def test_each_page_draws_its_twins_numbers(sample: TestClient, page: str, twin: str) -> None:
    from retain.service import charts

    html = sample.get(page).text
    assert f'href="{twin}"' in html
    payload = sample.get(twin).json()
    drawn = json.loads(
        re.search(r'<script type="application/json" id="retain-charts">(.*?)</script>', html, re.S)[
            1
        ]  # type: ignore[index]
    )
    expected = {
        "/": charts.overview_charts,
        "/cohorts": charts.cohort_charts,
        "/segments": charts.segment_charts,
        "/at-risk": charts.at_risk_charts,
        "/models": charts.model_charts,
    }[page](payload)
    assert drawn == json.loads(json.dumps(expected))
    for chart_id in drawn:
        assert f'data-chart="{chart_id}"' in html


def test_overview_page_shows_the_api_numbers(sample: TestClient) -> None:
    html = sample.get("/").text
    overview = sample.get("/api/metrics").json()["overview"]
    assert f"{overview['customers']:,}" in html
    assert f"{overview['net_revenue']:,.0f}" in html


def test_every_page_renders_without_warm_caches(cdnow_sample_db: Path) -> None:
    # render times are measured in benchmarks/bench_service.py; here: each page answers cold
    with TestClient(create_app(cdnow_sample_db, writes=False, warm=False)) as client:
        for url in ("/", "/cohorts", "/segments", "/models", "/at-risk", "/customers", "/loyalty"):
            response = client.get(url)
            assert response.status_code == 200, url
            assert "<h1" in response.text and "Traceback" not in response.text, url
        first = client.get("/api/customers", params={"limit": 1}).json()["customers"][0]
        page = client.get(f"/customers/{first['customer_id']}")
        assert page.status_code == 200 and first["customer_id"] in page.text


def test_search_goes_straight_to_one_customer(tiny: TestClient) -> None:
    for text in ("a", "ana@example.com", "ANA@EXAMPLE.COM"):
        response = tiny.get("/search", params={"q": text}, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/customers/a"
    listed = tiny.get("/search", params={"q": "nobody"})
    assert listed.status_code == 200 and "No customers match" in listed.text


def test_customer_page_and_missing_customer_page(tiny: TestClient) -> None:
    page = tiny.get("/customers/a")
    assert page.status_code == 200 and "o2" in page.text and "Green tea" in page.text
    missing = tiny.get("/customers/zz")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_empty_store_says_to_ingest(tmp_path: Path) -> None:
    Store(tmp_path / "empty.duckdb").close()
    with TestClient(create_app(tmp_path / "empty.duckdb", warm=False)) as client:
        response = client.get("/api/metrics")
        assert response.status_code == 503
        assert "retain ingest" in response.json()["detail"]
        assert "retain ingest" in client.get("/").text


def test_no_store_file_is_a_clear_error(tmp_path: Path) -> None:
    from retain.errors import StoreError

    with pytest.raises(StoreError, match="retain ingest"):
        create_app(tmp_path / "missing.duckdb")


# -- recommendations and audiences ---------------------------------------------------------
def test_cart_recommendations(tiny: TestClient) -> None:
    body = tiny.post("/api/recommendations", json={"skus": ["TEA", "NOPE"], "k": 2}).json()
    assert body["unknown_skus"] == ["NOPE"]
    skus = [i["sku"] for i in body["items"]]
    assert "TEA" not in skus and len(skus) == 2
    # the cup is in 3 of the 4 orders with tea, the teapot in none
    assert skus[0] == "CUP" and body["items"][0]["kind"] == "bought_together"


def test_cart_must_hold_skus(tiny: TestClient) -> None:
    assert tiny.post("/api/recommendations", json={"skus": []}).status_code == 422
    assert tiny.post("/api/recommendations", json={"items": ["TEA"]}).status_code == 422


def test_audience_csv_respects_consent(tiny: TestClient) -> None:
    segment = tiny.get("/api/customers/b").json()["segment"]["name"]
    response = tiny.get(f"/api/audiences/{segment}.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().splitlines()
    assert lines[0].startswith("customer_id,")
    assert not any(line.startswith("b,") for line in lines[1:])  # b opted out
    assert response.headers["x-retain-opted-out"] == "1"
    assert int(response.headers["x-retain-exported"]) == len(lines) - 1
    wider = tiny.get(f"/api/audiences/{segment}.csv", params={"consent": "unknown-ok"})
    assert int(wider.headers["x-retain-exported"]) >= len(lines) - 1
    assert not any(line.startswith("b,") for line in wider.text.splitlines()[1:])
    assert tiny.get(f"/api/audiences/{segment}.csv", params={"consent": "all"}).status_code == 422
    missing = tiny.get("/api/audiences/Giants.csv")
    assert missing.status_code == 404 and "Champions" in missing.text


# -- writes ----------------------------------------------------------------------------------
NEW_ORDER = {
    "order_id": "o7",
    "customer_id": "a",
    "ordered_at": "2024-03-20T10:00:00+01:00",
    "gross": "25.00",
    "discount": 5,
    "lines": [{"sku": "POT", "name": "Teapot", "quantity": 1, "unit_price": 20}],
}


def test_writes_need_the_key(writable: TestClient) -> None:
    assert writable.post("/api/orders", json=NEW_ORDER).status_code == 401
    wrong = writable.post("/api/orders", json=NEW_ORDER, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert writable.get("/api/customers/a").json()["orders"]["orders"] == 2


def test_the_key_is_checked_before_the_order(writable: TestClient) -> None:
    assert writable.post("/api/orders", json={}).status_code == 401
    assert writable.post("/api/orders", json={"colour": "red"}).status_code == 401


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_an_amount_that_is_not_a_number_is_refused(writable: TestClient, amount: str) -> None:
    # Python's JSON reader takes these literals as floats: they must not be stored
    body = '{"order_id": "o11", "customer_id": "a", "ordered_at": "2024-03-20", "net_revenue": %s}'
    response = writable.post(
        "/api/orders",
        content=body % amount,
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    if amount != "1e999":  # not JSON at all: refused before the order is read
        assert response.json()["detail"] == [
            f"net_revenue: {amount} is not a JSON number (JSON has no NaN or Infinity)"
        ]
    else:  # a JSON number too large for a float: quarantined as a file ingest would
        problem = response.json()["quarantined"][0]
        assert problem["column"] == "net_revenue" and "unreadable amount" in problem["reason"]
    assert writable.get("/api/customers/a").json()["orders"]["orders"] == 2


def test_an_order_is_stored_and_the_customer_updated_at_once(writable: TestClient) -> None:
    writable.get("/api/customers/a")  # the index is built before the write
    response = writable.post(
        "/api/orders", json=NEW_ORDER, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["stored"] and body["quarantined"] == []
    # net revenue = gross - discount = 20; a had 2 orders for 40
    assert body["customer"]["orders"]["orders"] == 3
    assert body["customer"]["orders"]["net_revenue"] == pytest.approx(60.0)
    after = writable.get("/api/customers/a", params={"history": 1}).json()
    assert after["orders"]["orders"] == 3
    assert after["history"][0]["order_id"] == "o7"
    assert after["history"][0]["products"] == ["Teapot"]
    # the same order again replaces it, as a changed row in a file does
    again = writable.post("/api/orders", json=NEW_ORDER, headers={"X-API-Key": KEY})
    assert again.status_code == 201
    assert writable.get("/api/customers/a").json()["orders"]["orders"] == 3
    # no model is fitted in this store: the order is kept, and the response says why
    # the scores were not updated
    assert body["rescored"] is False
    assert any("retain fit" in note for note in body["notes"])


def test_a_new_customer_is_found_after_their_first_order(writable: TestClient) -> None:
    order = {**NEW_ORDER, "order_id": "o8", "customer_id": "d", "email": "Di@Example.com"}
    assert writable.post("/api/orders", json=order, headers={"X-API-Key": KEY}).status_code == 201
    body = writable.get("/api/customers/d").json()
    assert body["orders"]["orders"] == 1
    assert body["profile"]["email"] == "di@example.com"


def test_a_bad_order_is_quarantined_with_the_ingest_reason(writable: TestClient) -> None:
    bad = {**NEW_ORDER, "order_id": "o9", "ordered_at": "last tuesday"}
    response = writable.post("/api/orders", json=bad, headers={"X-API-Key": KEY})
    assert response.status_code == 422
    body = response.json()
    assert not body["stored"]
    assert body["quarantined"][0]["column"] == "ordered_at"
    assert "unreadable date" in body["detail"][0] and "last tuesday" in body["detail"][0]
    store_path = writable.app.state.service.db_path  # type: ignore[attr-defined]
    writable.app.state.service.close()  # type: ignore[attr-defined]
    with Store(store_path, read_only=True) as store:
        reasons = store.query("SELECT reason, source_file FROM quarantine")
    assert reasons["reason"].str.contains("last tuesday").any()
    assert reasons["source_file"].str.startswith("api:POST /api/orders").all()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"gross": None}, "net_revenue or gross"),
        ({"ordered_at": None}, "ordered_at"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_order_shape_is_checked_first(
    writable: TestClient, change: dict[str, object], words: str
) -> None:
    order = {k: v for k, v in {**NEW_ORDER, **change}.items() if v is not None}
    response = writable.post("/api/orders", json=order, headers={"X-API-Key": KEY})
    assert response.status_code == 422
    assert words in json.dumps(response.json())


def test_a_negative_line_is_quarantined_and_the_order_kept(writable: TestClient) -> None:
    order = {
        **NEW_ORDER,
        "order_id": "o10",
        "lines": [{"sku": "CUP", "quantity": 1}, {"sku": "POT", "quantity": -2}],
    }
    body = writable.post("/api/orders", json=order, headers={"X-API-Key": KEY}).json()
    assert body["stored"]
    assert [(q["row"], q["column"]) for q in body["quarantined"]] == [(3, "quantity")]


def test_read_only_service_refuses_writes(tiny_db: Path, tmp_path: Path) -> None:
    with serve_copy(tiny_db, tmp_path, writes=False) as client:
        response = client.post("/api/orders", json=NEW_ORDER, headers={"X-API-Key": KEY})
        assert response.status_code == 403
        assert client.post("/api/orders", json={}).status_code == 403


def test_without_a_key_only_this_machine_may_write(tiny_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    shutil.copy(tiny_db, path)
    with TestClient(create_app(path, None, warm=False), client=ELSEWHERE) as client:
        assert client.post("/api/orders", json=NEW_ORDER).status_code == 401
    with TestClient(create_app(path, None, warm=False), client=LOOPBACK) as client:
        assert client.post("/api/orders", json=NEW_ORDER).status_code == 201


# -- rescoring after an order ---------------------------------------------------------------
@pytest.fixture(scope="module")
def scored_sample_db(cdnow_sample_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample fitted (MBG/NBD in weeks) and scored."""
    return scored_copy(cdnow_sample_db, tmp_path_factory.mktemp("scored") / "scored.duckdb")


def test_a_lookup_reads_the_same_row_as_the_index_table(scored_sample_db: Path) -> None:
    """A lookup reads a customer's values from the index's column arrays, not from a row
    Series of its table: every customer's payload is the one the table's row gives."""
    from retain.service import data

    with Store(scored_sample_db, read_only=True) as store:
        index = data.build_customer_index(store)
        assert index.score_columns
        for customer_id, position in index.positions.items():
            by_row = data._customer(store, customer_id, index.frame.iloc[position], index, 0, None)
            assert data.customer_payload(store, customer_id, index) == by_row, customer_id


def test_a_lookup_from_memory_is_the_lookup_through_the_store(scored_sample_db: Path) -> None:
    """GET /api/customers/{id} answers from memory when it holds everything (the index and
    recommendations loaded and current, no history asked): the same answer as the path
    that reads the store, for every customer."""
    from retain.service import api

    with TestClient(create_app(scored_sample_db, warm=False), client=LOOPBACK) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        index = api.index_of(service)
        some = list(index.positions)[:50]
        assert api.customer_in_memory(service, some[0], 0) is None  # no recommendations yet
        api.recommendations(service)
        assert api.customer_in_memory(service, some[0], 3) is None  # history: from the store
        for customer_id in some:
            fast = api.customer_in_memory(service, customer_id, 0)
            assert fast is not None
            assert fast == api.customer(service, customer_id, 0)
            assert client.get(f"/api/customers/{customer_id}").json() == fast
        assert api.customer_in_memory(service, "nobody", 0) is None
        assert client.get("/api/customers/nobody").status_code == 404


@pytest.fixture
def scored_writable(scored_sample_db: Path, tmp_path: Path) -> Iterator[TestClient]:
    with serve_copy(scored_sample_db, tmp_path) as client:
        yield client


def _model_scores_now(db_path: str, customer_id: str) -> dict[str, float]:
    """P(alive) and expected purchases of one customer, computed from scratch from the
    store's orders and its fitted parameters."""
    import retain
    from retain.scoring import load_fit

    with Store(db_path, read_only=True) as store:
        model, _, row = load_fit(store)
        summary = retain.summarize(store, unit=row["unit"], grain=row["grain"])
    one = summary.loc[[customer_id]]
    return {
        "p_alive": float(model.p_alive(one).iloc[0]),
        "expected_purchases_365d": float(model.expected_purchases(one, "365D").iloc[0]),
    }


def test_an_order_rescores_the_customer_at_once(scored_writable: TestClient) -> None:
    # customer 1012 bought often in early 1997 and then stopped: P(alive) is low
    before = scored_writable.get("/api/customers/1012").json()
    assert before["scores"]["p_alive"] < 0.2 and before["churn"]["risk"] == "lost"
    order = {
        "order_id": "rt-1",
        "customer_id": "1012",
        "ordered_at": "1998-06-30T15:00:00",
        "net_revenue": 42.0,
    }
    response = scored_writable.post("/api/orders", json=order, headers={"X-API-Key": KEY})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rescored"] is True and body["notes"] == []
    after = scored_writable.get("/api/customers/1012").json()
    # read fresh, or from the index rebuilt in the background meanwhile: the same numbers
    for part in ("orders", "scores"):
        assert after[part] == body["customer"][part], part
    scores = after["scores"]
    assert after["orders"]["orders"] == before["orders"]["orders"] + 1
    assert after["orders"]["last_order_at"].startswith("1998-06-30T15:00")
    assert before["orders"]["last_order_at"] < "1998"
    assert scores["p_alive"] > 0.9 > before["scores"]["p_alive"]
    assert scores["expected_purchases_365d"] > 2 * before["scores"]["expected_purchases_365d"]
    assert scores["as_of"] == "1998-06-30"
    # the very numbers the model gives on the store's orders now
    service = scored_writable.app.state.service  # type: ignore[attr-defined]
    service.close()
    expected = _model_scores_now(service.db_path, "1012")
    assert scores["p_alive"] == pytest.approx(expected["p_alive"], rel=1e-9)
    assert scores["expected_purchases_365d"] == pytest.approx(
        expected["expected_purchases_365d"], rel=1e-9
    )
    # ordered today, so the most recent recency score and no longer lost
    assert after["rfm"]["r_score"] == 5 and after["orders"]["days_since_last_order"] == 0
    assert after["churn"]["risk"] != "lost"


def test_a_new_customer_gets_a_scores_row(scored_writable: TestClient) -> None:
    order = {
        "order_id": "rt-2",
        "customer_id": "new-1",
        "ordered_at": "1998-06-30T09:30:00",
        "net_revenue": 25.0,
    }
    assert scored_writable.get("/api/customers/new-1").status_code == 404
    response = scored_writable.post("/api/orders", json=order, headers={"X-API-Key": KEY})
    assert response.status_code == 201, response.text
    assert response.json()["rescored"] is True
    body = scored_writable.get("/api/customers/new-1").json()
    scores = body["scores"]
    assert scores["expected_purchases_365d"] > 0
    assert scores["clv_12m"] > 0 and scores["fit_id"] == 1
    assert body["segment"]["name"] and body["churn"]["risk"] in ("low", "medium")
    service = scored_writable.app.state.service  # type: ignore[attr-defined]
    service.close()
    with Store(service.db_path, read_only=True) as store:
        rows = store.query("SELECT * FROM customer_scores WHERE customer_id = 'new-1'")
        total = store.scalar("SELECT count(*) FROM customer_scores")
        params = json.loads(store.scalar("SELECT params FROM model_fits"))["params"]
    # MBG/NBD: a customer first seen today may have left right after that first order,
    # with probability a / (a + b)
    assert scores["p_alive"] == pytest.approx(params["b"] / (params["a"] + params["b"]))
    assert len(rows) == 1 and total == 2357 + 1
    assert rows["p_alive"].iloc[0] == pytest.approx(scores["p_alive"])
    assert rows["segment"].iloc[0] == body["segment"]["name"]


# -- the models page ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(
    scored_sample_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("fitted") / "fitted.duckdb"
    shutil.copy(scored_sample_db, path)
    with TestClient(create_app(path, writes=False, warm=False), client=LOOPBACK) as client:
        yield client


def test_models_tracking_ends_at_the_stores_repeat_purchases(
    fitted: TestClient, cdnow_sample_db: Path
) -> None:
    body = fitted.get("/api/models").json()
    with Store(cdnow_sample_db, read_only=True) as store:
        # repeat purchases: days with an order after each customer's first day (grain D)
        repeats = store.scalar(
            "SELECT count(DISTINCT (customer_id, CAST(ordered_at AS DATE))) "
            "- count(DISTINCT customer_id) FROM orders"
        )
    tracking = body["tracking"]
    assert tracking["actual_cumulative"][-1] == repeats == tracking["repeat_purchases"]
    assert tracking["dates"][0] == "1997-01-07" and tracking["dates"][-1] == "1998-06-30"
    assert len(tracking["dates"]) == len(tracking["predicted_cumulative"]) == 78
    assert tracking["predicted_cumulative"][-1] == pytest.approx(repeats, rel=0.1)
    assert body["fit"]["model"] == "mbgnbd" and body["fit"]["converged"]
    assert body["fit"]["scores_use_it"] and body["fit"]["log_likelihood"] < 0
    params = {p["parameter"]: p for p in body["parameters"]}
    assert set(params) == {"r", "alpha", "a", "b"}
    assert all(p["standard_error"] > 0 for p in params.values())
    assert all(p["lower_95"] < p["estimate"] < p["upper_95"] for p in params.values())
    assert {p["parameter"] for p in body["spend_parameters"]} == {"p", "q", "gamma"}


def test_models_p_alive_grid_falls_with_time_since_the_last_purchase(fitted: TestClient) -> None:
    grid = fitted.get("/api/models").json()["p_alive"]
    values = grid["values"]
    assert grid["unit"] == "weeks" and grid["frequencies"][0] == 0
    assert grid["since_last"][0] == 0 and grid["since_last"][-1] == grid["T"]
    assert len(values) == len(grid["frequencies"]) and len(values[0]) == len(grid["since_last"])
    # a one-time buyer's last purchase was T ago: that cell only; MBG/NBD lets them have
    # left after it, so less than 1
    assert values[0][:-1] == [None] * (len(values[0]) - 1) and 0 < values[0][-1] < 1
    for row in values[1:]:
        assert all(0 <= v <= 1 for v in row)
        assert all(a >= b for a, b in itertools.pairwise(row))
        assert row[0] > row[-1]


def test_models_lifespan_is_one_over_churn_and_marks_the_stores_churn(fitted: TestClient) -> None:
    from retain.service import charts

    body = fitted.get("/api/models").json()
    life = body["lifespan"]
    assert life["churn_rates"][0] == 1 and life["churn_rates"][-1] == 90
    assert life["lifespan"] == pytest.approx([100 / c for c in life["churn_rates"]])
    assert 0 < life["store_churn_rate"] < 100
    assert life["store_lifespan"] == pytest.approx(100 / life["store_churn_rate"])
    specs = charts.model_charts(body)
    assert list(specs) == ["model-tracking", "p-alive-matrix", "churn-lifespan"]
    marker = specs["churn-lifespan"]["datasets"][1]["data"]
    at = next(i for i, v in enumerate(marker) if v is not None)
    assert specs["churn-lifespan"]["datasets"][0]["data"][at] == marker[at]
    html = fitted.get("/models").text
    for chart in specs:
        assert f'data-chart="{chart}"' in html
    assert "Std. error" in html and "MBG/NBD" in html


def test_models_page_without_a_fit_says_how_and_draws_the_lifespan(sample: TestClient) -> None:
    body = sample.get("/api/models").json()
    assert body["fit"] is None and body["tracking"] is None and body["p_alive"] is None
    assert any("retain fit" in note for note in body["notes"])
    html = sample.get("/models").text
    assert "retain fit" in html and 'data-chart="churn-lifespan"' in html
    assert 'data-chart="model-tracking"' not in html


def test_models_page_draws_its_charts_on_the_first_request_when_fitted(
    scored_sample_db: Path, tmp_path: Path
) -> None:
    with serve_copy(scored_sample_db, tmp_path, writes=False) as client:
        response = client.get("/models")  # nothing cached yet: computed for this request
        assert response.status_code == 200
        for chart in ("model-tracking", "p-alive-matrix", "churn-lifespan"):
            assert f'data-chart="{chart}"' in response.text, chart


def test_report_has_the_model_charts(scored_sample_db: Path, tmp_path: Path) -> None:
    from retain.service.report import write_report

    copy = tmp_path / "copy.duckdb"
    shutil.copy(scored_sample_db, copy)
    html = write_report(copy, tmp_path / "report.html").read_text()
    for chart in ("model-tracking", "p-alive-matrix", "churn-lifespan"):
        assert f'data-chart="{chart}"' in html
    # no backtest yet: the model health section says how to get one
    assert 'id="model-health"' in html and 'id="no-backtest"' in html


def test_report_has_the_model_health_of_the_latest_backtest(
    scored_sample_db: Path, tmp_path: Path
) -> None:
    from retain.backtest import backtest
    from retain.service.report import write_report

    copy = tmp_path / "copy.duckdb"
    shutil.copy(scored_sample_db, copy)
    with Store(copy) as store:
        run = backtest(store, horizons=[90], learned=False)
    html = write_report(copy, tmp_path / "report.html").read_text()
    assert 'id="no-backtest"' not in html
    for chart in ("backtest-calibration", "backtest-deciles", "backtest-bias"):
        assert f'data-chart="{chart}"' in html, chart
    assert f"backtest {run.backtest_id}," in html
    # the offline file links to no dashboard page, and shows the fit guard once
    assert 'href="/model-health' not in html
    assert 'id="fit-guard"' in html and 'id="card-guard"' not in html


# -- keys and binding ------------------------------------------------------------------------
def test_check_bind() -> None:
    with pytest.raises(ServiceError, match="RETAIN_API_KEY"):
        check_bind("0.0.0.0", None, writes=True)
    check_bind("0.0.0.0", KEY, writes=True)
    check_bind("0.0.0.0", None, writes=False)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, None, writes=True)
    assert not is_loopback("192.168.1.4")


def test_resolve_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETAIN_API_KEY", raising=False)
    monkeypatch.delenv("RETAIN_API_KEY_FILE", raising=False)
    assert resolve_api_key() is None
    monkeypatch.setenv("RETAIN_API_KEY", "from-the-environment")
    assert resolve_api_key() == "from-the-environment"
    key_file = tmp_path / "key"
    key_file.write_text(f"{KEY}\n")
    assert resolve_api_key(key_file=key_file) == KEY
    key_file.write_text("short\n")
    with pytest.raises(ServiceError, match="16 characters"):
        resolve_api_key(key_file=key_file)
    with pytest.raises(ServiceError, match="cannot read"):
        resolve_api_key(key_file=tmp_path / "missing")
    # one rule for every source: a short key from the environment is refused too
    monkeypatch.setenv("RETAIN_API_KEY", "short")
    with pytest.raises(ServiceError, match="RETAIN_API_KEY holds no key of 16 characters"):
        resolve_api_key()


def test_cli_refuses_a_public_address_without_a_key(
    cdnow_sample_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from retain.cli import app

    monkeypatch.delenv("RETAIN_API_KEY", raising=False)
    monkeypatch.delenv("RETAIN_API_KEY_FILE", raising=False)
    result = CliRunner().invoke(app, ["serve", "--db", str(cdnow_sample_db), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0" in result.output


# -- documentation and report ----------------------------------------------------------------
def test_openapi_documents_every_api_route(tiny: TestClient) -> None:
    from fastapi import routing

    app = tiny.app
    walk = getattr(routing, "iter_route_contexts", None)  # FastAPI 0.160+: included routers
    found = list(walk(app.routes)) if walk else list(app.routes)  # type: ignore[attr-defined]
    routes = {
        (re.sub(r":\w+}", "}", r.path), method.lower())
        for r in found
        if str(getattr(r, "path", "")).startswith(("/api/", "/webhooks/"))
        for method in (getattr(r, "methods", None) or ()) - {"HEAD"}
    }
    assert len(routes) >= 12, routes
    paths = tiny.get("/openapi.json").json()["paths"]
    for path, method in sorted(routes):
        assert path in paths and method in paths[path], (path, method)
        operation = paths[path][method]
        assert operation.get("summary"), (path, method)
        assert operation.get("description"), (path, method)
    # and nothing in the schema that the app does not serve
    assert {(p, m) for p, ops in paths.items() for m in ops} == routes
    assert "404" in paths["/api/customers/{customer_id}"]["get"]["responses"]
    assert "401" in paths["/api/orders"]["post"]["responses"]
    assert "401" in paths["/webhooks/shopify/{topic}"]["post"]["responses"]
    assert not any(p.startswith("/customers") for p in paths)  # pages stay out of the API


def test_report_is_one_self_contained_file(cdnow_sample_db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from retain.cli import app

    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--db", str(cdnow_sample_db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere
    assert '<script src="' not in html and '<link rel="stylesheet"' not in html
    assert "Chart.js v4" in html
    for section in ("overview", "cohorts", "segments", "models"):
        assert f'id="{section}"' in html
    for chart in ("clv-distribution", "cohort-heatmap", "segment-treemap", "rfm-grid"):
        assert f'data-chart="{chart}"' in html


def test_vendored_library_is_recorded_with_its_license() -> None:
    from retain.service.app import STATIC_DIR

    vendor = STATIC_DIR / "vendor"
    readme = (vendor / "README.md").read_text()
    for name in ("chart.umd.min.js", "chartjs-chart-treemap.min.js", "chartjs-chart-matrix.min.js"):
        assert (vendor / name).stat().st_size > 1000
        assert name in readme
    assert "4.6.1" in readme and "MIT" in readme
    assert "MIT License" in (vendor / "LICENSE.chart.js.md").read_text()


def test_an_unexpected_failure_is_a_json_500_on_the_api_and_a_page_on_the_dashboard(
    tiny_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retain.service import api

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(api, "metrics", broken)
    with serve_copy(tiny_db, tmp_path, writes=False, raise_server_exceptions=False) as client:
        response = client.get("/api/metrics")
        assert response.status_code == 500
        error_id = response.json()["error_id"]
        assert response.json()["detail"].startswith(f"internal error {error_id}: ")
        assert "disk on fire" not in response.text  # the detail is for the log
        page = client.get("/")
        assert page.status_code == 500
        assert "text/html" in page.headers["content-type"] and "internal error" in page.text


def test_unknown_paths_answer_json_on_the_api_and_the_error_page_elsewhere(
    sample: TestClient,
) -> None:
    api = sample.get("/api/nope")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}
    page = sample.get("/nope")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"] and "Not found" in page.text
    wrong_method = sample.post("/models")
    assert wrong_method.status_code == 405 and "text/html" in wrong_method.headers["content-type"]


def test_models_page_shows_the_choice_and_the_fit_guard(fitted: TestClient) -> None:
    body = fitted.get("/api/models").json()
    assert body["choice"] is None  # a named model: nothing was compared
    kept = [t for t in body["guard"] if t["kept"]]
    assert [t["model"] for t in kept] == [body["fit"]["model"]]
    assert all(c["passed"] for c in kept[0]["checks"]) and body["refused"] is None
    html = fitted.get("/models").text
    assert 'id="fit-guard"' in html and "why this model" not in html


def test_a_refused_fit_is_shown_and_not_used(scored_sample_db: Path, tmp_path: Path) -> None:
    from retain.scoring import FitRefused, fit_store, score_store

    path = tmp_path / "refused.duckdb"
    shutil.copy(scored_sample_db, path)
    with Store(path) as store, pytest.raises(FitRefused):
        fit_store(store, model="bgnbd", unit="W")
    with TestClient(create_app(path, writes=False, warm=False), client=LOOPBACK) as client:
        body = client.get("/api/models").json()
        html = client.get("/models").text
    assert body["refused"]["fit_id"] == 2 and "one_time_buyers" in body["refused"]["reason"]
    assert body["fit"]["fit_id"] == 1  # the kept fit still scores the customers
    assert [f["kept"] for f in body["fits"]] == [False, True]
    assert 'id="refused-guard"' in html and "refused by the fit guard" in html
    with Store(path) as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_store(store, unit="W")
        score_store(store)  # the page shows the fit the scores use
    with TestClient(create_app(path, writes=False, warm=False), client=LOOPBACK) as client:
        body = client.get("/api/models").json()
        html = client.get("/models").text
    assert body["refused"] is None and [f["kept"] for f in body["fits"]] == [True, False, True]
    assert "log-likelihood" in body["choice"]["criterion"]
    assert "why this model" in html and body["choice"]["reason"][:40] in html


def test_api_orders_take_refunds_statuses_and_any_case_of_an_email(
    writable: TestClient,
) -> None:
    """The API applies the file ingest's rules: a refund adjusts its order, a cancelled
    order is kept but is no purchase, and an e-mail id in capitals is the same customer."""
    order = {
        "order_id": "api-r1",
        "customer_id": "Mixed.Case@Example.com",
        "ordered_at": "2024-03-30T10:00:00",
        "net_revenue": 80.0,
    }
    headers = {"X-API-Key": KEY}
    first = writable.post("/api/orders", json=order, headers=headers)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["as"] == "purchase" and body["customer_id"] == "mixed.case@example.com"
    assert body["customer"]["orders"]["net_revenue"] == pytest.approx(80.0)
    refund = {
        "order_id": "api-r1-refund",
        "refund_of": "api-r1",
        "customer_id": "MIXED.CASE@example.com",
        "ordered_at": "2024-03-31T09:00:00",
        "net_revenue": -30.0,
    }
    second = writable.post("/api/orders", json=refund, headers=headers)
    assert second.status_code == 201, second.text
    assert second.json()["as"] == "refund"
    assert second.json()["customer"]["orders"]["net_revenue"] == pytest.approx(50.0)
    cancelled = {
        "order_id": "api-c1",
        "customer_id": "someone.new@example.com",
        "ordered_at": "2024-03-30T11:00:00",
        "net_revenue": 20.0,
        "status": "cancelled",
    }
    third = writable.post("/api/orders", json=cancelled, headers=headers)
    assert third.status_code == 201, third.text
    assert third.json()["as"] == "not a purchase" and third.json()["customer"] is None
    assert any("excluded_orders" in n for n in third.json()["notes"])


def test_rates_and_shares_are_percent_everywhere_in_the_api(sample: TestClient) -> None:
    """One convention: every rate and share in percent (0-100), p_alive 0-1."""
    segments = sample.get("/api/segments").json()["segments"]
    assert sum(s["share_of_customers"] for s in segments) == pytest.approx(100.0)
    assert sum(s["share_of_revenue"] for s in segments) == pytest.approx(100.0)
    overview = sample.get("/api/metrics").json()["overview"]
    assert 1 < overview["repeat_purchase_rate"] <= 100
    html = sample.get("/segments").text
    top = max(segments, key=lambda s: s["share_of_customers"])
    assert f"{top['share_of_customers']:.1f}%" in html
