"""Recognise an input file's format from its header."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from retain.errors import DataError, SchemaError
from retain.ingest import text

FORMATS = (
    "auto",
    "orders",
    "shopify",
    "cdnow",
    "customers",
    "lines",
    "spend",
    "subscriptions",
    "stripe",
    "feedback",
    "events",
)

_CDNOW_LINE = re.compile(r"^\s*\d+\s+(\d+\s+)?\d{8}\s+\d+\s+[\d.]+\s*$")


def is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


# The delimiters a header may use, most usual first (the first wins a tie).
DELIMITERS = (",", ";", "\t", "|")


def first_lines(path: Path, n: int = 2, encoding: str = "utf-8-sig") -> list[str]:
    """The first ``n`` lines of a text file (plain or gzip), with their line endings;
    bytes that do not decode become U+FFFD."""
    decoded = text.head(path).decode(encoding, errors="replace")
    return decoded.splitlines(keepends=True)[:n]


def sniff_delimiter(header: str) -> str | None:
    """The delimiter a header line uses: the one of :data:`DELIMITERS` found most often
    outside quotes; None when it holds none of them (one column, or not a header)."""
    bare = re.sub(r'"[^"]*"', "", header)
    counts = [bare.count(d) for d in DELIMITERS]
    best = max(range(len(DELIMITERS)), key=lambda i: counts[i])
    return DELIMITERS[best] if counts[best] else None


def header_columns(line: str, delimiter: str = ",") -> list[str]:
    """The column names of a header line split by ``delimiter``, trimmed."""
    import csv

    return [c.strip() for c in next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))]


def canonical_names(columns: list[str]) -> set[str]:
    """The column names as the ingest matches them to canonical ones: trimmed, lower
    case, spaces and dashes as underscores ("Order ID" is order_id)."""
    return {c.strip().lower().replace(" ", "_").replace("-", "_") for c in columns}


def looks_like_shopify(columns: list[str]) -> bool:
    """Whether the columns are those of Shopify's orders export: its line-item or
    payment columns, or at least Name, Email, Subtotal and Created at (or Paid at),
    and none of the canonical order columns (a file with order_id, customer_id or
    ordered_at is an orders file, whatever else it holds)."""
    names = {c.strip().lower() for c in columns}
    if canonical_names(columns) & {"order_id", "customer_id", "ordered_at"}:
        return False
    if {"name", "financial status"} <= names or {"lineitem name", "email"} <= names:
        return True
    return {"name", "email", "subtotal"} <= names and bool(names & {"created at", "paid at"})


def looks_like_stripe_subscriptions(columns: list[str]) -> bool:
    """Whether the columns are those of Stripe's subscriptions export: ``id``, a
    customer, an amount, and its "(UTC)" dates or its plan and interval."""
    names = {c.strip().lower() for c in columns}
    started = names & {"start (utc)", "start date (utc)", "created (utc)"}
    return (
        "id" in names
        and "status" in names
        and bool(started)
        and bool(names & {"customer id", "customer email"})
    )


def detect_format(
    path: Path, columns: list[str] | None, mapping: Mapping[str, str] | None = None
) -> str:
    """Name the reader for a file: shopify, cdnow, spend, lines, subscriptions, stripe
    (its subscriptions export), feedback, customers or orders.
    The canonical columns of ``mapping`` (``--map ordered_at=order_date``) count as
    the file's own."""
    if columns is None:  # text whose first line is not a delimited header
        lines = first_lines(path)
        if lines and (
            lines[0].split()[:2] == ["customer_id", "date"] or _CDNOW_LINE.match(lines[0])
        ):
            return "cdnow"
        raise SchemaError(f"{path}: cannot tell the format of this file; pass --format")
    names = canonical_names(columns) | set(mapping or {})
    if looks_like_shopify([*columns, *(mapping or {})]):
        return "shopify"
    if names >= {"date", "channel", "amount"} and len(names) <= 4:
        return "spend"
    if (names & {"event_id", "anonymous_id"} or {"kind", "occurred_at"} <= names) and not (
        names & {"order_id", "ordered_at", "feedback_id"}
    ):
        return "events"  # a missing column is then named by the reader
    if "feedback_id" in names and not names & {"order_id", "ordered_at"}:
        return "feedback"  # a missing column is then named by the reader
    if "subscription_id" in names and not names & {"order_id", "ordered_at"}:
        return "subscriptions"  # a missing column is then named by the reader
    if looks_like_stripe_subscriptions(columns):
        return "stripe"
    if "sku" in names and "order_id" in names and "ordered_at" not in names:
        return "lines"
    if "customer_id" in names and "order_id" not in names and "ordered_at" not in names:
        return "customers"
    return "orders"


def check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"no such file: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give a file")
    if path.stat().st_size == 0:
        raise DataError("the file is empty: nothing to ingest", file=str(path))
