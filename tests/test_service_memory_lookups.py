"""Customer lookups answered from memory: ``GET /api/customers/{id}`` gives the very
answer the route gives, after the same checks (Host, read key), and the index's rows read
column by column are the values :func:`retain.service.data.plain` makes of the frame's."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")

from fastapi.testclient import TestClient  # noqa: E402

from retain.service import api, create_app, data  # noqa: E402
from store_helpers import store_of  # noqa: E402

KEY = "a-test-key-of-enough-length"
ORDERS = """order_id,customer_id,ordered_at,net_revenue
o1,customer0@example.com,2024-01-10,10.00
o2,customer0@example.com,2024-03-10 14:30:05,30.00
o3,zed-42,2024-02-01,5.50
o4,ab/7,2024-01-05,20.00
o5,ab/7,2024-02-05,20.00
"""
LINES = """order_id,sku,name,quantity,unit_price
o1,TEA,Green tea,1,10
o2,CUP,Tea cup,1,30
o3,TEA,Green tea,1,5.5
o4,POT,Teapot,1,20
o5,TEA,Green tea,1,20
"""
PEOPLE = """customer_id,email,name,accepts_marketing
zed-42,Zed.Smith@Shop.example,Zed,yes
"""
CUSTOMERS = ("customer0@example.com", "zed-42", "ab/7")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_of(tmp_path_factory.mktemp("memory"), orders=ORDERS, lines=LINES, customers=PEOPLE)


@pytest.fixture(scope="module")
def client(db: Path) -> Iterator[TestClient]:
    with TestClient(create_app(db, warm=False), client=("127.0.0.1", 50000)) as served:
        served.get(f"/api/customers/{CUSTOMERS[0]}")  # the index and recommendations loaded
        yield served


def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids the route itself looks up from now on (the memory answer does not call it)."""
    seen: list[str] = []
    original = api.customer_in_memory

    def spy(service: Any, customer_id: str, history: int) -> Any:
        seen.append(customer_id)
        return original(service, customer_id, history)

    monkeypatch.setattr(api, "customer_in_memory", spy)
    return seen


@pytest.mark.parametrize("customer_id", CUSTOMERS)
def test_a_lookup_from_memory_is_the_routes_answer(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, customer_id: str
) -> None:
    seen = routed(monkeypatch)
    from_memory = client.get(f"/api/customers/{customer_id}")
    assert seen == []  # answered before the routes
    through_route = client.get(f"/api/customers/{customer_id}", params={"history": 0})
    assert seen == [customer_id]
    assert from_memory.status_code == through_route.status_code == 200
    assert from_memory.content == through_route.content
    for header in ("content-type", "content-length"):
        assert from_memory.headers[header] == through_route.headers[header]
    assert from_memory.json()["customer_id"] == customer_id
    assert from_memory.json()["recommendations"]["note"] is None


def test_what_memory_does_not_hold_goes_to_the_route(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = routed(monkeypatch)
    assert client.get("/api/customers/ZED-42").json()["customer_id"] == "zed-42"  # by case
    assert client.get("/api/customers/nobody").status_code == 404
    assert client.get("/api/customers/zed-42", params={"history": 1}).json()["history"]
    assert seen == ["ZED-42", "nobody", "zed-42"]


def test_a_lookup_from_memory_passes_the_host_check(client: TestClient) -> None:
    foreign = client.get("/api/customers/zed-42", headers={"host": "attacker.example"})
    assert foreign.status_code == 403
    assert "zed-42" not in foreign.text


def test_a_lookup_from_memory_needs_the_read_key_where_reads_do(tmp_path: Path) -> None:
    db = store_of(tmp_path, orders=ORDERS, lines=LINES, customers=PEOPLE)
    app = create_app(db, KEY, writes=False, warm=False, host="0.0.0.0")
    with TestClient(app, client=("203.0.113.9", 50000)) as public:
        keyed = {"X-API-Key": KEY}
        assert public.get("/api/customers/zed-42", headers=keyed).status_code == 200
        refused = public.get("/api/customers/zed-42")  # now held in memory
        assert refused.status_code == 401 and "zed-42" not in refused.text
        answered = public.get("/api/customers/zed-42", headers=keyed)
        routed_answer = public.get("/api/customers/zed-42?history=0", headers=keyed)
        assert answered.status_code == 200 and answered.content == routed_answer.content


def test_index_rows_are_the_plain_values_of_the_frame() -> None:
    stamps = pd.to_datetime(
        ["2024-03-10 00:00:00", "2024-03-10 14:30:05.250000", None, "1969-12-31 23:59:59"],
        format="ISO8601",
    ).as_unit("us")
    frame = pd.DataFrame(
        {
            "orders": np.array([1, 2, 3, 4], dtype=np.int64),
            "f_score": np.array([5, 4, 3, 2], dtype=np.int32),
            "net_revenue": [1.5, np.nan, np.inf, -0.0],
            "accepts_marketing": [True, False, True, False],
            "last_order_at": stamps,
            "segment": pd.array(["Champions", None, "Lost", "Ünïcode"], dtype="string[pyarrow]"),
            "name": pd.Series(["Ana", None, "Bo", "Cy"], dtype=object),
            "channel": pd.Categorical(["web", "shop", None, "web"]),
            "points": pd.array([1, None, 3, 4], dtype="Int64"),
        },
        index=pd.Index(["a", "b", "c", "d"], name="customer_id"),
    )
    index = data.CustomerIndex(frame, data.index_positions(frame), None, "none")
    for position in range(len(frame)):
        expected = {str(c): data.plain(frame.iloc[position][c]) for c in frame.columns}
        row = index.row(position)
        assert row == expected
        assert [type(v) for v in row.values()] == [type(v) for v in expected.values()]
    assert index.row(0)["last_order_at"] == "2024-03-10"
    assert index.row(1)["last_order_at"] == "2024-03-10T14:30:05.250000"
    assert index.row(2)["net_revenue"] is None and index.row(2)["last_order_at"] is None


def test_warming_loads_the_index_and_the_overview_then_the_purchases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store_of(tmp_path, orders=ORDERS, lines=LINES, customers=PEOPLE)
    from retain.service import app as app_module

    calls: list[str] = []
    for name in ("index_of", "recommendations", "metrics"):
        original = getattr(api, name)

        def spy(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(api, name, spy)
    monkeypatch.setattr(app_module, "release_free_memory", lambda *service: calls.append("release"))
    service = app_module.Service(db, api_key=None, writes=False)
    try:
        service.warm()
        assert service.peek("customer_index") is not None
        assert service.peek("recommendations") is not None
    finally:
        service.close()
    # the overview is computed beside the index, and done before the first release (which
    # lowers DuckDB's memory limit for a moment: no start-up query may run then)
    assert [c for c in calls if c != "metrics"] == [
        "index_of",
        "release",
        "recommendations",
        "release",
        "release",
    ]
    assert calls.count("metrics") == 1
    assert calls.index("metrics") < calls.index("release")


def test_warming_without_an_index_still_loads_the_purchases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store_of(tmp_path, orders=ORDERS, lines=LINES, customers=PEOPLE)
    from retain.errors import StoreError
    from retain.service import app as app_module

    def no_index(service: Any) -> Any:
        raise StoreError("no index today")

    monkeypatch.setattr(api, "index_of", no_index)
    service = app_module.Service(db, api_key=None, writes=False)
    try:
        service.warm()
        assert service.peek("recommendations") is not None
        # computed beside the index, whatever becomes of it
        assert service.peek(("metrics", "month", 1.0, 365)) is not None
    finally:
        service.close()
