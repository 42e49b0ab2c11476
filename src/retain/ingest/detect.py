"""Recognise an input file's format from its header."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from retain.errors import DataError, SchemaError

FORMATS = ("auto", "orders", "shopify", "cdnow", "customers", "lines", "spend")

_CDNOW_LINE = re.compile(r"^\s*\d+\s+(\d+\s+)?\d{8}\s+\d+\s+[\d.]+\s*$")


def is_parquet(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"PAR1"


def first_lines(path: Path, n: int = 2) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        return [line for _, line in zip(range(n), fh, strict=False)]


def header_columns(line: str, delimiter: str = ",") -> list[str]:
    import csv

    return [c.strip() for c in next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))]


def detect_format(path: Path, columns: list[str] | None) -> str:
    """Name the reader for a file: shopify, cdnow, spend, lines, customers or orders."""
    if columns is None:  # text whose first line is not a delimited header
        lines = first_lines(path)
        if lines and (
            lines[0].split()[:2] == ["customer_id", "date"] or _CDNOW_LINE.match(lines[0])
        ):
            return "cdnow"
        raise SchemaError(f"{path}: cannot tell the format of this file; pass --format")
    names = {c.strip().lower() for c in columns}
    if {"name", "financial status"} <= names or {"lineitem name", "email"} <= names:
        return "shopify"
    if names >= {"date", "channel", "amount"} and len(names) <= 4:
        return "spend"
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
