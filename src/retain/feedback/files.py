"""Texts read from a file to tag without storing them (``retain feedback tag FILE``).

CSV (UTF-8, a header row), JSON lines (an object a line) or Parquet, with ``feedback_id``
and ``text`` (a ticket's ``subject`` is read with its text), and optionally ``rating``
(stars, 1 to 5; ``stars``, ``csat`` 1 to 5 and ``nps`` 0 to 10 are read too), and any other
columns (``customer_id``, ``submitted_at``...), which are not needed to tag. A row without
an id, with nothing to tag, with a score out of range, or with an id seen before in the
file is set aside with its row (as a spreadsheet or editor numbers it), column and reason.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.errors import DataError

SCORES = {"rating": (1, 5), "stars": (1, 5), "csat": (1, 5), "nps": (0, 10)}


@dataclass
class Texts:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scores: dict[str, list[float | None]] = field(
        default_factory=lambda: {name: [] for name in SCORES}
    )
    set_aside: list[dict[str, Any]] = field(default_factory=list)


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.column_names, [(i + 2, r) for i, r in enumerate(table.to_pylist())]
    with path.open(encoding="utf-8-sig", newline="") as handle:
        head = handle.read(4096)
        handle.seek(0)
        if head.lstrip().startswith("{") or name.endswith((".jsonl", ".ndjson")):
            rows: list[tuple[int, dict[str, Any]]] = []
            columns: dict[str, None] = {}
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path} line {number}: not a JSON object ({exc.msg}); a JSON lines "
                        "file holds one object a line"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(f"{path} line {number}: expected a JSON object")
                columns.update(dict.fromkeys(record))
                rows.append((number, record))
            return list(columns), rows
        reader = csv.DictReader(handle)
        out = [(reader.line_num, dict(record)) for record in reader]
        return list(reader.fieldnames or []), out


def read_texts(path: Path) -> Texts:
    """The file's texts to tag, and the rows set aside (each with ``row``, ``column``,
    ``reason``)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        columns, records = _records(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    normal = {c.strip().lower().replace(" ", "_").replace("-", "_"): c for c in columns}
    missing = [c for c in ("feedback_id", "text") if c not in normal]
    if missing:
        raise DataError(
            f"{path}: no {' or '.join(missing)} column; found {', '.join(columns) or 'none'} "
            "(expected feedback_id and text, optionally rating, customer_id, submitted_at)"
        )
    out = Texts()
    seen: dict[str, int] = {}

    def cell(record: dict[str, Any], name: str) -> Any:
        value = record.get(normal[name]) if name in normal else None
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    for row, record in records:

        def aside(column: str, reason: str, row: int = row) -> None:
            out.set_aside.append({"row": row, "column": column, "reason": reason})

        key = cell(record, "feedback_id")
        if key is None:
            aside("feedback_id", "no feedback_id")
            continue
        key = str(key).strip()
        if key in seen:
            aside("feedback_id", f"feedback_id {key} again (first at row {seen[key]})")
            continue
        text = " ".join(str(cell(record, c) or "") for c in ("subject", "text")).strip()
        scores: dict[str, float | None] = {}
        bad = False
        for name, (low, high) in SCORES.items():
            value = cell(record, name)
            if value is None:
                scores[name] = None
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not (low <= number <= high):
                aside(name, f"{name}: got {value!r}, expected a number from {low} to {high}")
                bad = True
                break
            scores[name] = number
        if bad:
            continue
        if not text and all(v is None for v in scores.values()):
            aside("text", "nothing to tag: no text and no score")
            continue
        seen[key] = row
        out.ids.append(key)
        out.texts.append(text)
        for name in SCORES:
            out.scores[name].append(scores[name])
    return out
