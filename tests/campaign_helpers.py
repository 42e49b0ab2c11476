"""Small hand-made stores for the campaign tests: customers with contacts, orders."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from retain.store import Store
from store_helpers import insert_frames


def people_store(
    path: Path | str,
    people: list[dict],
    *,
    orders: list[tuple[str, str, str, float]] | None = None,
) -> Path:
    """A store at ``path`` with ``people`` in customers and ``orders`` (order_id,
    customer_id, ordered_at, net_revenue); each person without an order gets one
    order on 2025-06-01."""
    rows = list(orders or [])
    having = {r[1] for r in rows}
    for i, person in enumerate(people):
        if person["customer_id"] not in having:
            rows.append((f"auto-{i}", person["customer_id"], "2025-06-01 10:00:00", 40.0))
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "net_revenue"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    customers = pd.DataFrame(people)
    for column in ("birthday",):
        if column in customers:
            customers[column] = pd.to_datetime(customers[column]).dt.date
    with Store(path) as store:
        insert_frames(store, {"orders": frame, "customers": customers})
    return Path(path)


def person(cid: str, **fields: object) -> dict:
    """One customer row: an e-mail address by default, marketing accepted."""
    return {"customer_id": cid, "email": f"{cid}@example.com", "accepts_marketing": True, **fields}


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
