"""Errors retain raises, each saying what went wrong in a user's words.

The whole tree::

    RetainError            root: catch this to catch everything retain raises
    ├── ArgumentError      an argument's value cannot be used (also a ValueError)
    ├── SchemaError        a file or table lacks columns, or has the wrong ones
    ├── DataError          a value cannot be used: names file, row, column, value, expected
    ├── StoreError         the store cannot be opened, or is empty where data is needed
    ├── ModelError         a model cannot be fitted, or data does not match a fitted model
    │   └── FitRefused     (retain.scoring) no model passed the fit guard; ``report`` has why
    └── ServiceError       (retain.service) the service cannot start as asked

``ArgumentError`` is also a :class:`ValueError`, so code written against the
bare ``ValueError`` that retain once raised for a bad argument still catches it.

The CLI turns each into one clear line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations


class RetainError(Exception):
    """Root of every error retain raises on purpose."""


class ArgumentError(RetainError, ValueError):
    """An argument's value cannot be used: a negative margin, an unknown option value,
    a rate that is not a number. Says which argument, what it got and what it takes.

    A subclass of :class:`ValueError` too, so ``except ValueError`` keeps working
    where retain raised a bare ``ValueError`` before.
    """


class SchemaError(RetainError):
    """Missing or unexpected columns in an input file or table."""


class DataError(RetainError):
    """A value that cannot be used, located by file, row and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
        expected: str | None = None,
    ) -> None:
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column!r}" if column else "",
            )
            if part
        )
        detail = message
        if value is not None:
            detail += f": got {value!r}"
        if expected:
            detail += f", expected {expected}"
        super().__init__(f"{where}: {detail}" if where else detail)
        self.file = file
        self.row = row
        self.column = column
        self.value = value
        self.expected = expected


class StoreError(RetainError):
    """The store cannot be opened or holds no data where data is needed."""


class StoreLocked(StoreError):
    """Another process (a running ``retain serve``) holds the store's file."""


class ModelError(RetainError):
    """A model cannot be fitted, or is applied to data it was not fitted for."""
