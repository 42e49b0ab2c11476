"""The feedback loop: what customers say, which pain points keep coming back, and what
they cost.

- :mod:`retain.feedback.language`: each text's language and words (en, th, ru, vi, ar);
- :mod:`retain.feedback.tagging`: topics from a taxonomy, and the tone;
- :mod:`retain.feedback.discovery`: recurring themes the taxonomy lacks;
- :mod:`retain.feedback.painpoints`: the topics ranked by the value at risk.

Stored feedback is tagged as it is ingested (``feedback_tags``), with the store's taxonomy
(:func:`set_taxonomy`; the shipped one until then).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pandas as pd

from retain.feedback.tagging import (
    SENTIMENTS,
    Tags,
    Taxonomy,
    parse_taxonomy,
    shipped_taxonomy,
    store_taxonomy,
    tag,
)

if TYPE_CHECKING:
    from retain.store import Store

__all__ = [
    "SENTIMENTS",
    "Tags",
    "Taxonomy",
    "parse_taxonomy",
    "retag",
    "said",
    "set_taxonomy",
    "shipped_taxonomy",
    "store_taxonomy",
    "tag",
    "tag_stored",
    "tags_frame",
]

_TEXT = "concat_ws('. ', nullif(trim(subject), ''), nullif(trim(text), ''))"

COMPLAINT_SQL = "t.sentiment = 'negative' AND len(t.topics) > 0"
"""A complaint, over ``feedback_tags AS t``: a negative text naming a pain point (what the
complaint trigger, the churn reasons and the routes' default act on)."""


def said(row: Any) -> dict[str, Any]:
    """One stored text as a message or a webhook shows it (a row of ``feedback`` with its
    ``feedback_tags`` columns): ``feedback_id``, ``kind``, ``subject``, ``text`` (the
    subject when there is no text), ``nps`` (a whole number), ``rating``, ``date``,
    ``created_at``, ``topics``, ``sentiment``."""

    def plain(value: Any) -> Any:
        return (
            None
            if value is None or (not isinstance(value, list | tuple) and pd.isna(value))
            else value
        )

    when = pd.Timestamp(row["created_at"])
    nps = plain(row.get("nps"))
    rating = plain(row.get("rating"))
    text = plain(row.get("text")) or plain(row.get("subject"))
    return {
        "feedback_id": str(row["feedback_id"]),
        "kind": plain(row.get("kind")),
        "subject": plain(row.get("subject")),
        "text": None if text is None else str(text),
        "nps": None if nps is None else int(nps),
        "rating": None if rating is None else float(rating),
        "date": when.date().isoformat(),
        "created_at": when.isoformat(),
        "topics": [str(t) for t in (row.get("topics") if row.get("topics") is not None else [])],
        "sentiment": plain(row.get("sentiment")),
    }


def tag_stored(store: Store, ids_sql: str | None = None, taxonomy: Taxonomy | None = None) -> int:
    """Tag the stored feedback whose ids ``ids_sql`` selects (every row when None) with
    ``taxonomy`` (the store's when None) into ``feedback_tags``; the number tagged."""
    taxonomy = taxonomy or store_taxonomy(store)
    where = f"WHERE feedback_id IN ({ids_sql})" if ids_sql else ""
    rows = store.con.execute(
        f"SELECT feedback_id, {_TEXT} AS text, nps, csat, stars FROM feedback {where} "
        "ORDER BY feedback_id"
    ).fetch_df()
    if rows.empty:
        return 0

    def scores(column: str) -> list[float | None]:
        return [None if pd.isna(v) else float(v) for v in rows[column]]

    found = tag(
        [str(t) for t in rows["text"]],
        nps=scores("nps"),
        csat=scores("csat"),
        stars=scores("stars"),
        taxonomy=taxonomy,
    )
    frame = pd.DataFrame(
        {
            "feedback_id": rows["feedback_id"].astype(str),
            "language": [t.language for t in found],
            "topics": [list(t.topics) for t in found],
            "sentiment": [t.sentiment for t in found],
            "sentiment_from": [t.sentiment_from for t in found],
        }
    )
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with store.transaction():
        store.con.register("_tagged", frame)
        try:
            store.con.execute(
                "INSERT OR REPLACE INTO feedback_tags SELECT feedback_id, language, "
                "topics::VARCHAR[], sentiment, sentiment_from, ?, ? FROM _tagged",
                [taxonomy.digest, now],
            )
        finally:
            store.con.unregister("_tagged")
    return len(frame)


def set_taxonomy(store: Store, taxonomy: Taxonomy) -> None:
    """Keep ``taxonomy`` as the store's own (it tags from now on; :func:`retag` tags what
    is stored)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    store.con.execute(
        "INSERT INTO feedback_taxonomy VALUES (?, ?, ?, ?)",
        [taxonomy.text, taxonomy.digest, taxonomy.source, now],
    )


def retag(store: Store, taxonomy: Taxonomy | None = None) -> int:
    """Tag every stored text again, with ``taxonomy`` kept as the store's when given."""
    with store.transaction():
        if taxonomy is not None:
            set_taxonomy(store, taxonomy)
        return tag_stored(store, None, taxonomy)


def tags_frame(store: Store) -> pd.DataFrame:
    """Every stored feedback row with its tags: ``feedback_id``, ``customer_id``,
    ``created_at``, ``kind``, ``nps``, ``text``, ``language``, ``topics`` (a list),
    ``sentiment``; and whether the tags are from the store's current taxonomy
    (``attrs["stale"]``: how many are not)."""
    digest = store_taxonomy(store).digest
    frame = store.con.execute(
        f"SELECT f.feedback_id, f.customer_id, f.created_at, f.kind, f.nps, f.csat, f.stars, "
        f"{_TEXT} AS text, t.language, coalesce(t.topics, []::VARCHAR[]) AS topics, "
        "t.sentiment, t.taxonomy FROM feedback f LEFT JOIN feedback_tags t USING (feedback_id) "
        "ORDER BY f.created_at, f.feedback_id"
    ).fetch_df()
    frame.attrs["stale"] = int((frame["taxonomy"] != digest).sum()) if len(frame) else 0
    frame["topics"] = [list(t) for t in frame["topics"]]
    return frame.drop(columns=["taxonomy"])
