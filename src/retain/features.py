"""Per-customer summaries that the models and segments read.

:func:`summarize` turns a transaction log into one row per customer with the
"recency, frequency, monetary value" summary of the buy-till-you-die
literature, computed in DuckDB.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pandas as pd

from retain.errors import ArgumentError, DataError, SchemaError
from retain.store import Store

UNIT_DAYS: dict[str, int] = {"D": 1, "W": 7}
GRAINS: dict[str, str] = {"D": "day", "W": "week"}

SUMMARY_SQL = """
WITH tx AS (
    -- cut on the raw timestamp, before any truncation: nothing after the end of
    -- the observation day enters, even inside the observation end's week
    SELECT
        CAST(customer_id AS VARCHAR)                  AS customer_id,
        date_trunc($grain, CAST(ts AS TIMESTAMP))     AS period,
        CAST(amount AS DOUBLE)                        AS amount
    FROM src
    WHERE customer_id IS NOT NULL AND ts IS NOT NULL
      AND CAST(ts AS TIMESTAMP) < $cutoff
),
periods AS (
    -- purchases in the same grain period count as one, their values summed
    SELECT customer_id, period, sum(amount) AS amount
    FROM tx
    GROUP BY customer_id, period
)
SELECT
    customer_id,
    count(*) - 1                                                        AS frequency,
    date_diff('day', min(period), max(period)) / $unit_days             AS recency,
    date_diff('day', min(period), date_trunc($grain, $observation_end)) / $unit_days AS T,
    CASE WHEN count(*) > 1
         THEN (sum(amount) - arg_min(amount, period)) / (count(*) - 1)
         ELSE 0.0 END                                                   AS monetary
FROM periods
GROUP BY customer_id
ORDER BY customer_id
"""


def summarize(
    transactions: Any,
    *,
    customer_id: str = "customer_id",
    timestamp: str = "ordered_at",
    amount: str | None = "net_revenue",
    observation_end: str | dt.date | dt.datetime | pd.Timestamp | None = None,
    unit: str = "D",
    grain: str = "D",
) -> pd.DataFrame:
    """One row per customer: ``frequency``, ``recency``, ``T`` and ``monetary``.

    ``transactions`` is a pandas or polars DataFrame, a pyarrow Table, or a
    :class:`~retain.store.Store` (its ``orders`` table). Purchases in the same
    ``grain`` period ("D" day, "W" week) count as one, their values summed.

    - ``frequency``: number of distinct grain periods with a purchase, minus one
      (repeat purchases).
    - ``recency``: time from the first to the last purchase, in ``unit``\\ s
      ("D" days or "W" weeks).
    - ``T``: time from the first purchase to ``observation_end``, in ``unit``\\ s.
    - ``monetary``: mean value of the repeat purchases (the first excluded),
      0 for customers with none; in the currency of ``amount``.

    Transactions after the end of the ``observation_end`` day (default: the
    last transaction's day; for a store, its ``as_of`` setting when set, see
    :mod:`retain.config`) are ignored, whatever the grain: the cut is on the
    timestamp, before purchases are merged, so an order later in the
    observation end's week does not count under ``grain="W"``. ``T`` runs from
    the first purchase's period to the observation end's period. The result is indexed by ``customer_id`` and carries
    ``attrs`` ``unit``, ``grain`` and ``observation_end`` so that a model fitted
    on it can refuse data summarised differently.
    """
    if unit not in UNIT_DAYS:
        raise ArgumentError(f"unit must be one of {sorted(UNIT_DAYS)}, got {unit!r}")
    if grain not in GRAINS:
        raise ArgumentError(f"grain must be one of {sorted(GRAINS)}, got {grain!r}")

    if observation_end is None and isinstance(transactions, Store):
        from retain.config import load_settings, observation_day

        if load_settings(transactions).as_of is not None:
            observation_end = observation_day(transactions)  # the store's as_of setting
    con, relation = _source(transactions, customer_id, timestamp, amount)
    try:
        if observation_end is None:
            last = con.execute("SELECT max(CAST(ts AS TIMESTAMP)) FROM src").fetchall()[0]
            if not last or last[0] is None:
                raise DataError("no transactions to summarize")
            end = pd.Timestamp(last[0])
        else:
            end = pd.Timestamp(observation_end)
            if end.tzinfo is not None:
                end = end.tz_convert("UTC").tz_localize(None)
        params = {
            "grain": GRAINS[grain],
            "observation_end": end.to_pydatetime(),
            "cutoff": (end.normalize() + pd.Timedelta(days=1)).to_pydatetime(),
            "unit_days": float(UNIT_DAYS[unit]),
        }
        result = con.execute(SUMMARY_SQL, params).df()
    finally:
        if relation is not None:
            con.unregister("src_input")
        con.execute("DROP VIEW IF EXISTS src")
    if result.empty:
        raise DataError(f"no transactions on or before the observation end {end.date()}")
    result = result.set_index("customer_id")
    result["frequency"] = result["frequency"].astype("int64")
    if amount is None:
        result = result.drop(columns="monetary")
    result.attrs.update({"unit": unit, "grain": grain, "observation_end": end.date().isoformat()})
    return result


def _source(
    transactions: Any, customer_id: str, timestamp: str, amount: str | None
) -> tuple[duckdb.DuckDBPyConnection, Any]:
    """Expose the input as a view ``src(customer_id, ts, amount)``."""
    amount_sql = f'"{amount}"' if amount else "0.0"
    if isinstance(transactions, Store):
        con = transactions.con
        con.execute(
            f'CREATE OR REPLACE TEMP VIEW src AS SELECT "{customer_id}" AS customer_id, '
            f'"{timestamp}" AS ts, {amount_sql} AS amount FROM orders'
        )
        return con, None

    frame = transactions
    if type(frame).__module__.startswith("polars"):
        frame = frame.to_arrow()
    columns = list(frame.column_names) if hasattr(frame, "column_names") else list(frame.columns)
    needed = [c for c in (customer_id, timestamp, amount) if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise SchemaError(
            f"transactions lack the column(s) {missing}; found {columns}. "
            "Name the columns with customer_id=, timestamp= and amount=."
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("src_input", frame)
    con.execute(
        f'CREATE OR REPLACE TEMP VIEW src AS SELECT "{customer_id}" AS customer_id, '
        f'"{timestamp}" AS ts, {amount_sql} AS amount FROM src_input'
    )
    return con, frame


CUSTOMER_SORTS = ("net_revenue", "orders", "last_order", "first_order", "customer_id")


def customer_table(
    store: Store, *, sort: str = "net_revenue", limit: int | None = None
) -> pd.DataFrame:
    """One row per customer who ordered: ``customer_id``, ``email``, ``orders``,
    ``net_revenue`` (reporting currency), ``first_order``, ``last_order`` (UTC).

    ``sort`` is one of :data:`CUSTOMER_SORTS`; the largest (or latest) first,
    except ``customer_id``, ascending.
    """
    if sort not in CUSTOMER_SORTS:
        raise ArgumentError(f"sort must be one of {', '.join(CUSTOMER_SORTS)}, got {sort!r}")
    if limit is not None and limit < 0:
        raise ArgumentError(f"limit must be 0 or more, got {limit}")
    direction = "ASC" if sort == "customer_id" else "DESC"
    return store.query(
        f"""
        SELECT o.customer_id, c.email, count(*) AS orders,
               round(sum(o.net_revenue), 2) AS net_revenue,
               min(o.ordered_at) AS first_order, max(o.ordered_at) AS last_order
        FROM orders o LEFT JOIN customers c USING (customer_id)
        GROUP BY o.customer_id, c.email
        ORDER BY {sort} {direction}, customer_id
        LIMIT ?
        """,
        [limit if limit is not None else 2**62],
    )
