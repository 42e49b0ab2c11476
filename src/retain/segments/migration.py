"""How customers moved between segments from one date to another.

Segments are computed twice, each time from the orders placed up to that date
and scored against the customers of that date. Customers who had not ordered
by the first date appear in the row "(new)".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from retain.errors import DataError
from retain.segments.assign import Rules, customer_segments, resolve_rules
from retain.segments.rfm import AsOf
from retain.store import Store, open_store

NEW = "(new)"
"""Row label of customers who had no order by the first date."""


@dataclass
class SegmentMigration:
    """Transition matrix and the customers who slipped from a valuable segment.

    - ``counts``: customers by segment on ``start`` (rows, plus "(new)") and on
      ``end`` (columns);
    - ``percent``: each row as a percentage of that row's customers (0-100);
    - ``moved_down``: one row per customer who was in a valuable segment on
      ``start`` and is in a worse-ranked one on ``end``: customer_id,
      from_segment, to_segment, orders, net_revenue (to ``end``, reporting
      currency), days_since_last_order (on ``end``), ordered by net revenue.
    """

    start: str
    end: str
    counts: pd.DataFrame
    percent: pd.DataFrame
    moved_down: pd.DataFrame
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: matrices as {from: {to: value}}, moves as a list of records."""
        return {
            "from": self.start,
            "to": self.end,
            "counts": {
                row: {col: int(v) for col, v in values.items()}
                for row, values in self.counts.to_dict(orient="index").items()
            },
            "percent": {
                row: {col: round(float(v), 2) for col, v in values.items()}
                for row, values in self.percent.to_dict(orient="index").items()
            },
            "moved_down": self.moved_down.to_dict(orient="records"),
        }


def segment_migration(
    store: Store | str | Path,
    start: AsOf,
    end: AsOf,
    *,
    scheme: str = "quintiles",
    rules: Rules = None,
) -> SegmentMigration:
    """Segment transitions between the dates ``start`` and ``end`` (``start`` before ``end``).

    A move is "down" when the segment on ``end`` has a larger ``rank`` than a
    ``valuable`` segment on ``start`` (both from the rule table).
    """
    table = resolve_rules(rules)
    db = open_store(store, read_only=not isinstance(store, Store))
    try:
        db.require_orders()
        before = customer_segments(db, as_of=start, scheme=scheme, rules=table)
        after = customer_segments(db, as_of=end, scheme=scheme, rules=table)
    finally:
        if db is not store:
            db.close()
    start_day, end_day = before.attrs["as_of"], after.attrs["as_of"]
    if start_day >= end_day:
        raise DataError(
            f"the first date ({start_day}) must be before the second ({end_day})",
            expected="--from earlier than --to",
        )

    moves = pd.DataFrame(
        {
            "from_segment": before["segment"].reindex(after.index).fillna(NEW),
            "to_segment": after["segment"],
        }
    )
    names = table.names
    rows = [*names, NEW]
    counts = (
        pd.crosstab(moves["from_segment"], moves["to_segment"])
        .reindex(index=rows, columns=names, fill_value=0)
        .astype("int64")
    )
    counts.index.name, counts.columns.name = "from_segment", "to_segment"
    totals = counts.sum(axis=1)
    percent = counts.div(totals.where(totals > 0), axis=0).mul(100).fillna(0.0)

    segments = table.table().set_index("segment")
    from_rank = moves["from_segment"].map(segments["rank"])
    to_rank = moves["to_segment"].map(segments["rank"])
    valuable = moves["from_segment"].map(segments["valuable"]).fillna(False).astype(bool)
    down = valuable & (to_rank > from_rank)
    moved_down = (
        moves[down]
        .join(after[["orders", "net_revenue", "days_since_last_order"]])
        .rename_axis("customer_id")
        .reset_index()
        .sort_values(["net_revenue", "customer_id"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    return SegmentMigration(
        start=start_day,
        end=end_day,
        counts=counts,
        percent=percent,
        moved_down=moved_down,
        attrs={"scheme": scheme, "rules": table.source},
    )
