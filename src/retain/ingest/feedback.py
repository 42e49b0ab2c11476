"""The reader for feedback: survey answers, reviews and support tickets, one file format.

Columns (``feedback_id``, ``customer_id`` and ``created_at`` required; the customer is
their id or e-mail, as in orders):

- a survey answer: ``nps`` (0 to 10, whole) and/or ``csat`` (1 to 5), and its ``text``;
- a review: ``stars`` (1 to 5, halves allowed), ``text``, and the ``sku`` reviewed;
- a support ticket: ``subject``, ``text`` (its body), ``status`` and ``tags``.

``kind`` says which (survey, review or ticket; ``nps``, ``csat``... read as them); blank,
it comes from the columns filled: a subject or ticket status is a ticket, stars a
review, a score a survey, and text alone a comment. Rules, beyond each column's type:
something must have been said (a score or a text); it cannot be dated after the
observation date; a ``feedback_id`` seen before in the store replaces the stored row, and
twice in one file the later row is quarantined. Text is kept as written, in any
language.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from retain.schema import FEEDBACK

if TYPE_CHECKING:
    from retain.ingest.load import IngestReport, Loader
    from retain.store import Store

KINDS = {
    "survey": ("survey", "surveys", "nps", "csat", "answer", "response"),
    "review": ("review", "reviews", "rating"),
    "ticket": ("ticket", "tickets", "support", "case", "conversation", "complaint"),
    "comment": ("comment", "comments", "note", "feedback"),
}

ALIASES = {"created_at": "submitted_at", "stars": "rating"}
"""Other names a file may give a column (a column of the canonical name wins)."""


def load(
    loader: Loader, columns: list[str], mapping: Mapping[str, str] | None, report: IngestReport
) -> None:
    """Validate the feedback staged in ``_raw`` (as :func:`retain.ingest.load_orders` does
    orders), quarantine the bad rows with their reason, and store the rest (a stored
    feedback_id is replaced)."""
    from retain.ingest.load import (
        AFTER_AS_OF,
        CUSTOMER_KEY,
        _as_text,
        _lit,
        require,
        resolve_mapping,
    )

    resolved = resolve_mapping(FEEDBACK, columns, mapping, loader.file)
    for canonical, other in ALIASES.items():
        if canonical not in resolved and other in columns:
            resolved[canonical] = other
    require(FEEDBACK, resolved, columns, loader.file)

    def listed(values: tuple[str, ...]) -> str:
        return ", ".join(_lit(v) for v in values)

    given_kind = " ".join(
        f"WHEN lower(kind) IN ({listed(aliases)}) THEN {_lit(name)}"
        for name, aliases in KINDS.items()
    )
    inferred = (
        "CASE WHEN subject IS NOT NULL OR status IS NOT NULL THEN 'ticket' "
        "WHEN stars IS NOT NULL THEN 'review' "
        "WHEN nps IS NOT NULL OR csat IS NOT NULL THEN 'survey' ELSE 'comment' END"
    )
    as_of = _lit(loader.as_of.isoformat(sep=" "))
    layers = [
        [
            ("customer_id", CUSTOMER_KEY),
            ("status", "lower(status)"),
            ("kind", f"CASE WHEN _t_kind IS NULL THEN {inferred} {given_kind} END"),
            ("source_file", _lit(loader.file)),
        ]
    ]
    checks = [
        (
            "kind IS NULL",
            "kind",
            f"'unknown kind: got ''' || {_as_text('kind')} || ''', expected survey, review, "
            "ticket or comment (blank: from the columns filled)'",
        ),
        (
            "nps IS NOT NULL AND (nps < 0 OR nps > 10 OR nps <> round(nps))",
            "nps",
            f"'nps: got ' || {_as_text('nps')} || ', expected a whole number from 0 to 10'",
        ),
        (
            "csat IS NOT NULL AND (csat < 1 OR csat > 5)",
            "csat",
            f"'csat: got ' || {_as_text('csat')} || ', expected 1 to 5'",
        ),
        (
            "stars IS NOT NULL AND (stars < 1 OR stars > 5 OR stars * 2 <> round(stars * 2))",
            "stars",
            f"'stars: got ' || {_as_text('stars')} || ', expected 1 to 5 (halves allowed)'",
        ),
        (
            "nps IS NULL AND csat IS NULL AND stars IS NULL AND coalesce(trim(text), '') = '' "
            "AND coalesce(trim(subject), '') = ''",
            "text",
            "'nothing said: no score (nps, csat, stars) and no text or subject'",
        ),
        (
            f"created_at > TIMESTAMP {as_of}",
            "created_at",
            f"'{AFTER_AS_OF} {loader.as_of.date()}: got ' || {_as_text('created_at')}",
        ),
    ]
    clean = loader.validate(FEEDBACK, "_raw", resolved, checks, layers, raw_columns=columns)
    loader.quarantine_duplicates(clean, "feedback_id", "feedback")
    names = ", ".join(FEEDBACK.column_names)
    loader.con.execute(f"INSERT OR REPLACE INTO feedback ({names}) SELECT {names} FROM {clean}")
    # said by e-mail where the orders name customers by id: the customer with that e-mail
    loader.con.execute(
        f"""UPDATE feedback SET customer_id = m.customer_id
        FROM (SELECT lower(email) AS email, min(customer_id) AS customer_id FROM customers
              WHERE email LIKE '%_@_%' GROUP BY lower(email)) AS m
        WHERE feedback.customer_id = m.email AND feedback.customer_id <> m.customer_id
          AND feedback.feedback_id IN (SELECT feedback_id FROM {clean})"""
    )
    report.feedback = loader.count(clean)
    from retain.feedback import tag_stored

    tag_stored(loader.store, f"SELECT feedback_id FROM {clean}")


def ingest_records(store: Store, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Feedback sent as records (``POST /api/feedback``), checked by the file's rules: see
    :func:`retain.ingest.load.ingest_api_records`."""
    from retain.ingest.load import ingest_api_records

    return ingest_api_records(
        store,
        records,
        route="/api/feedback",
        table=FEEDBACK,
        load=load,
        stored=lambda report: report.feedback,
    )
