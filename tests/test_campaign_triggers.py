"""Triggers fire on the right day for the right customers, each firing with a stable key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from campaign_helpers import people_store, person
from retain.campaigns.definitions import parse_campaigns
from retain.campaigns.triggers import customer_fields, due
from retain.store import Store

HEAD = '[defaults]\nsender = "a@b.example"\n'


def campaign(trigger: str, extra: str = "") -> object:
    text = (
        HEAD + f'[[campaign]]\nname = "c"\ntrigger = {trigger}\nsubject = "s"\ntext = "t"\n{extra}'
    )
    return parse_campaigns(text).campaigns[0]


def fired(db: Path, trigger: str, today: str, extra: str = "") -> dict[str, str]:
    day = dt.date.fromisoformat(today)
    noon = dt.datetime.combine(day, dt.time(12), dt.UTC)
    with Store(db, read_only=True) as store:
        frame = customer_fields(store)
        rows = due(store, frame, campaign(trigger, extra), day, noon)
    assert isinstance(rows, pd.DataFrame)
    return dict(zip(rows["customer_id"], rows["trigger_key"], strict=True))


def test_post_purchase_fires_days_after_each_order_once_per_order(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b"), person("c")],
        orders=[
            ("o1", "a", "2025-12-24 09:00:00", 30.0),
            ("o2", "b", "2025-12-23 23:30:00", 30.0),
            ("o3", "c", "2025-12-10 09:00:00", 30.0),
        ],
    )
    trigger = '{ kind = "post_purchase", days = 7 }'
    assert fired(db, trigger, "2025-12-31", "catch_up_days = 0") == {"a": "order:o1"}
    # a run missed yesterday still sends yesterday's, with the same key
    assert fired(db, trigger, "2025-12-31", "catch_up_days = 1") == {
        "a": "order:o1",
        "b": "order:o2",
    }


def test_birthdays_and_anniversaries_once_a_year(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb",
        [
            person("born-today", birthday="1990-12-31"),
            person("leap", birthday="2000-02-29"),
            person("other", birthday="1985-06-15"),
            person("no-birthday"),
        ],
        orders=[
            ("o1", "born-today", "2024-12-31 10:00:00", 10.0),
            ("o2", "leap", "2025-12-31 08:00:00", 10.0),  # first order today: no anniversary
        ],
    )
    none = "catch_up_days = 0"
    assert fired(db, '"birthday"', "2025-12-31", none) == {"born-today": "birthday:2025"}
    # 29 February is celebrated on the 28th when the year has none
    assert fired(db, '"birthday"', "2025-02-28", none) == {"leap": "birthday:2025"}
    assert fired(db, '"birthday"', "2024-02-28", none) == {}
    assert fired(db, '"birthday"', "2024-02-29", none) == {"leap": "birthday:2024"}
    assert fired(db, '"anniversary"', "2025-12-31", none) == {"born-today": "anniversary:2025"}
    # a catch-up across new year keeps the year of the firing in its key
    assert fired(db, '"birthday"', "2026-01-02", "catch_up_days = 3") == {
        "born-today": "birthday:2025"
    }


def test_overdue_against_the_customers_own_rhythm(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb",
        [person("monthly"), person("yearly"), person("once")],
        orders=[
            ("m1", "monthly", "2025-09-01 10:00:00", 10.0),
            ("m2", "monthly", "2025-10-01 10:00:00", 10.0),
            ("m3", "monthly", "2025-10-31 10:00:00", 10.0),
            ("y1", "yearly", "2024-11-01 10:00:00", 10.0),
            ("y2", "yearly", "2025-11-01 10:00:00", 10.0),
            ("o1", "once", "2025-01-01 10:00:00", 10.0),
        ],
    )
    # 61 days after the last order: twice the monthly customer's gap, not the yearly one's
    got = fired(db, '{ kind = "overdue", factor = 2.0 }', "2025-12-31")
    assert got == {"monthly": "overdue:2025-10-31"}
    assert fired(db, '{ kind = "overdue", factor = 2.5 }', "2025-12-31") == {}


def test_audience_filters_and_churn_risk(tmp_path: Path) -> None:
    db = people_store(
        tmp_path / "s.duckdb",
        [person("a"), person("b")],
        orders=[
            ("a1", "a", "2024-01-01 10:00:00", 10.0),
            ("a2", "a", "2024-02-01 10:00:00", 10.0),
            ("a3", "a", "2024-03-01 10:00:00", 10.0),
            ("b1", "b", "2025-12-01 10:00:00", 10.0),
            ("b2", "b", "2025-12-30 10:00:00", 10.0),
        ],
    )
    with Store(db, read_only=True) as store:
        risk = customer_fields(store)["churn_risk"].to_dict()
    assert risk["a"] == "lost" and risk["b"] == "low"
    assert fired(db, '{ kind = "churn_risk", levels = ["high", "lost"] }', "2025-12-31") == {
        "a": "risk:lost:2024-03-01"
    }
    assert fired(db, '{ kind = "churn_risk", levels = ["high"] }', "2025-12-31") == {}
    assert fired(db, '"anniversary"', "2026-12-01", "audience = { min_orders = 3 }") == {}


def test_broadcast_fires_once_its_moment_has_come(tmp_path: Path) -> None:
    db = people_store(tmp_path / "s.duckdb", [person("a"), person("b")])
    trigger = '{ kind = "broadcast", at = "2025-12-31T10:00" }'
    assert fired(db, trigger, "2025-12-30") == {}
    assert fired(db, trigger, "2025-12-31") == {
        "a": "broadcast:2025-12-31T10:00",
        "b": "broadcast:2025-12-31T10:00",
    }


def test_segment_entered_and_left_against_the_kept_history(tmp_path: Path) -> None:
    from retain.campaigns import run_campaigns
    from retain.campaigns.channels import FileChannel
    from store_helpers import insert_frames

    people = [person(f"c{i}") for i in range(8)]
    orders = [(f"o{i}", f"c{i}", f"2025-{1 + i:02d}-10 10:00:00", 20.0 + i) for i in range(8)]
    db = people_store(tmp_path / "s.duckdb", people, orders=orders)
    with Store(db) as store:
        before = customer_fields(store)["segment"]
    moving = "c0"  # one old order; five recent ones will move them
    first_segment = before[moving]

    def campaigns(after: str) -> object:
        text = HEAD + "".join(
            f'[[campaign]]\nname = "{name}"\ntrigger = {{ kind = "{kind}", segment = "{seg}" }}\n'
            'subject = "s"\ntext = "t"\n'
            for name, kind, seg in (
                ("entered", "segment_entered", after),
                ("left", "segment_left", first_segment),
            )
        )
        return parse_campaigns(
            text.replace(
                'sender = "a@b.example"',
                'sender = "a@b.example"\ncaps = { day = 9, week = 9, month = 9 }',
            )
        )

    files = {"email": FileChannel(tmp_path / "out")}
    with Store(db) as store:
        seeded = run_campaigns(
            store, campaigns(first_segment), now="2025-12-01T12:00", channels=files
        )
        assert seeded.counts["sent"] == 0
        assert any("segment history starts" in note for note in seeded.notes)
        fresh = pd.DataFrame(
            {
                "order_id": [f"n{i}" for i in range(5)],
                "customer_id": moving,
                "ordered_at": pd.to_datetime([f"2025-11-{20 + i} 10:00:00" for i in range(5)]),
                "net_revenue": 90.0,
            }
        )
        insert_frames(store, {"orders": fresh})
        after = customer_fields(store)["segment"]
        assert after[moving] != first_segment
        moved = run_campaigns(
            store, campaigns(after[moving]), now="2025-12-02T12:00", channels=files
        )
        again = run_campaigns(
            store, campaigns(after[moving]), now="2025-12-03T12:00", channels=files
        )
        keys = [r[0] for r in store.con.execute("SELECT key FROM campaign_outbox").fetchall()]
    changed = {c for c in before.index if before[c] != after[c]}
    entered = {c for c in changed if after[c] == after[moving]}
    left = {c for c in changed if before[c] == first_segment}
    assert moving in entered and moving in left
    assert moved.by_campaign["entered"]["sent"] == len(entered)
    assert moved.by_campaign["left"]["sent"] == len(left)
    assert again.counts["sent"] == 0  # the history moved on: no second firing
    assert f"entered/{moving}/segment:into:{after[moving]}:2025-12-02" in keys
