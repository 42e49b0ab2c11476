"""Browse and cart events: the file format, ``POST /api/events``, visitors who become
customers, and the cart and browse abandonment triggers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from campaign_helpers import people_store, person
from retain.ingest import ingest
from retain.service import create_app
from retain.store import Store
from service_helpers import Served
from test_campaign_triggers import fired

KEY = "an-events-test-key-of-length"
EVENTS = """event_id,kind,customer_id,anonymous_id,sku,occurred_at
,page_view,,anon-1,,2025-12-30T10:00:00Z
,view_item,,anon-1,TEA,2025-12-30T10:01:00Z
,Add-To-Cart,A@Example.com,anon-1,TEA,2025-12-30T10:02:00+01:00
,product_view,,anon-2,POT,2025-12-30T11:00:00
e9,teleport,a,,,2025-12-30
e10,product_view,,,POT,2025-12-30
e11,add_to_cart,b,,,2025-12-30
e12,page_view,b,,,2030-01-01
"""


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b"), person("c")],
        orders=[
            ("o1", "a", "2025-06-01 10:00:00", 30.0),
            ("o2", "b", "2025-06-01 10:00:00", 20.0),
            ("o3", "c", "2025-06-01 10:00:00", 20.0),
        ],
    )


def events_of(db: Path) -> list[tuple[Any, ...]]:
    with Store(db, read_only=True) as store:
        return store.con.execute(
            "SELECT kind, customer_id, anonymous_id, sku, occurred_at FROM events "
            "ORDER BY occurred_at, kind"
        ).fetchall()


def test_an_events_file_is_read_checked_and_its_visitor_merged(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    with Store(db) as store:
        report = ingest(store, path, as_of="2025-12-31")
    assert report.format == "events" and report.events == 4 and report.quarantined == 4
    # the visitor anon-1 said who they are (by e-mail): their earlier events are a's too
    assert events_of(db) == [
        ("add_to_cart", "a", "anon-1", "TEA", dt.datetime(2025, 12, 30, 9, 2)),  # in UTC
        ("page_view", "a", "anon-1", None, dt.datetime(2025, 12, 30, 10, 0)),
        ("product_view", "a", "anon-1", "TEA", dt.datetime(2025, 12, 30, 10, 1)),
        ("product_view", None, "anon-2", "POT", dt.datetime(2025, 12, 30, 11, 0)),
    ]
    with Store(db, read_only=True) as store:
        reasons = store.con.execute(
            "SELECT row_number, column_name, reason FROM quarantine ORDER BY row_number"
        ).fetchall()
    assert [(r, c) for r, c, _ in reasons] == [
        (6, "kind"),
        (7, "customer_id"),
        (8, "sku"),
        (9, "occurred_at"),
    ]
    assert "teleport" in reasons[0][2] and "add_to_cart" in reasons[0][2]
    # the same events again, from another file and without ids: stored once
    again = tmp_path / "again.csv"
    again.write_text(EVENTS)
    with Store(db) as store:
        ingest(store, again, as_of="2025-12-31")
    assert len(events_of(db)) == 4


def test_events_are_posted_one_or_many_and_a_visitor_becomes_a_customer(db: Path) -> None:
    app = create_app(db, KEY, warm=False)
    headers = {"X-API-Key": KEY}
    with Served(app) as served:
        one = {"kind": "product_view", "anonymous_id": "v-7", "sku": "POT",
               "occurred_at": "2025-12-30T08:00:00Z"}  # fmt: skip
        status, _, body = served.request("POST", "/api/events", one, headers)
        assert status == 201 and json.loads(body)["stored"] == 1, body
        batch = {
            "events": [
                {"kind": "add_to_cart", "anonymous_id": "v-7", "customer_id": "c",
                 "sku": "POT", "occurred_at": "2025-12-30T08:05:00Z"},
                {"kind": "checkout_started", "anonymous_id": "v-7",
                 "occurred_at": "2025-12-30T08:06:00Z"},
                {"kind": "nonsense", "customer_id": "c", "occurred_at": "2025-12-30"},
            ]
        }  # fmt: skip
        status, _, body = served.request("POST", "/api/events", batch, headers)
        answer = json.loads(body)
        assert status == 201 and answer["stored"] == 2, body
        assert answer["quarantined"][0]["record"] == 3
        assert served.request("POST", "/api/events", one)[0] == 401  # the key is needed
        none = {"events": [{"kind": "page_view", "occurred_at": "2025-12-30"}]}
        status, _, body = served.request("POST", "/api/events", none, headers)
        assert status == 422 and "no one" in json.loads(body)["quarantined"][0]["reason"]
        rows = (
            app.state.service.store()
            .con.execute("SELECT kind, customer_id FROM events ORDER BY occurred_at")
            .fetchall()
        )
    # the view sent before v-7 said who they are is c's now, and so is what came after
    assert rows == [("product_view", "c"), ("add_to_cart", "c"), ("checkout_started", "c")]


def add_events(db: Path, tmp_path: Path, text: str) -> None:
    path = tmp_path / "more-events.csv"
    path.write_text("kind,customer_id,sku,occurred_at\n" + text)
    with Store(db) as store:
        ingest(store, path, format="events", as_of="2025-12-31")


def test_a_cart_left_for_hours_fires_once_and_an_order_cancels_it(db: Path, tmp_path: Path) -> None:
    add_events(
        db,
        tmp_path,
        "add_to_cart,a,TEA,2025-12-31T06:00:00\n"  # six hours before noon: abandoned
        "add_to_cart,b,TEA,2025-12-31T10:30:00\n"  # 90 minutes: not yet
        "add_to_cart,c,POT,2025-12-31T05:00:00\n",  # then c ordered
    )
    with Store(db) as store:
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) "
            "VALUES ('o9', 'c', TIMESTAMP '2025-12-31 07:00:00', 12.0)"
        )
    cart = '{ kind = "cart_abandoned" }'
    assert fired(db, cart, "2025-12-31", "catch_up_days = 1") == {"a": "cart:2025-12-31T06:00:00"}
    assert fired(
        db, '{ kind = "cart_abandoned", hours = 1 }', "2025-12-31", "catch_up_days = 1"
    ) == {
        "a": "cart:2025-12-31T06:00:00",
        "b": "cart:2025-12-31T10:30:00",
    }


def test_a_view_without_a_cart_is_a_browse_left(db: Path, tmp_path: Path) -> None:
    add_events(
        db,
        tmp_path,
        "product_view,a,TEA,2025-12-30T09:00:00\n"  # viewed, nothing since: fires
        "product_view,b,POT,2025-12-30T09:00:00\n"
        "add_to_cart,b,POT,2025-12-30T09:05:00\n",  # b put it in the cart: a cart, not a browse
    )
    browse = '{ kind = "browse_abandoned" }'
    assert fired(db, browse, "2025-12-31", "catch_up_days = 2") == {
        "a": "browse:2025-12-30T09:00:00"
    }
    assert fired(db, browse, "2025-12-30", "catch_up_days = 2") == {}  # 3 hours only at noon


def test_a_bad_hours_option_is_named() -> None:
    from retain.campaigns.definitions import parse_campaigns
    from retain.errors import DataError

    text = (
        '[defaults]\nsender = "a@b.example"\n[[campaign]]\nname = "c"\n'
        'trigger = { kind = "cart_abandoned", hours = 0 }\nsubject = "s"\ntext = "t"\n'
    )
    with pytest.raises(DataError, match="cart_abandoned hours out of range"):
        parse_campaigns(text)


def test_what_a_visitor_viewed_counts_for_their_suggestions(db: Path) -> None:
    import pandas as pd

    from store_helpers import insert_frames

    lines = pd.DataFrame(
        {
            "order_id": ["o1", "o1", "o2", "o2", "o3"],
            "sku": ["TEA", "CUP", "TEA", "CUP", "POT"],
            "quantity": [1.0] * 5,
            "unit_price": [10.0] * 5,
        }
    )
    with Store(db) as store:
        insert_frames(store, {"order_lines": lines})
    app = create_app(db, KEY, warm=False)
    headers = {"X-API-Key": KEY}
    just_now = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat()
    with Served(app) as served:
        views = {
            "events": [
                {
                    "kind": "product_view",
                    "anonymous_id": "v-1",
                    "sku": "TEA",
                    "occurred_at": just_now,
                },
                {
                    "kind": "product_view",
                    "anonymous_id": "v-1",
                    "sku": "POT",
                    "occurred_at": long_ago,
                },
            ]
        }
        assert served.request("POST", "/api/events", views, headers)[0] == 201
        status, _, body = served.request("POST", "/api/recommendations", {"anonymous_id": "v-1"})
        answer = json.loads(body)
        assert status == 200 and answer["viewed"] == ["TEA"], answer  # a month ago: no more
        assert "CUP" in [item["sku"] for item in answer["items"]]  # bought with tea
        assert served.request("POST", "/api/recommendations", {})[0] == 422
