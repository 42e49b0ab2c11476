"""Each of a million ids and its row number, held compactly.

A dict of a million ids holds a Python string and a dict entry per id (some 80 MB for
short ids, more for e-mails). The mappings here hold the ids' UTF-8 bytes one after the
other with where each ends, some 8 bytes an id besides its text, and answer what the
dict answers:

- :class:`RowNumbers`, for ids in any order, also holds each id's hash (sorted) and the
  row of each hash, 12 bytes more: a lookup hashes the id, finds its hash by binary
  search and compares the bytes of the rows with that hash, some 2 microseconds;
- :class:`SortedRowNumbers`, for ids already sorted, finds an id by binary search over
  the texts themselves, some 10 microseconds, and is built in a quarter of the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

_ENCODING = ("utf-8", "surrogatepass")  # any Python text, as it would be written


class _Texts(Mapping[str, int]):
    """Texts in row order as one run of UTF-8 bytes and the offset where each ends."""

    __slots__ = ("_ends", "_text")

    def __init__(self, texts: list[str]) -> None:
        joined = "".join(texts)
        if joined.isascii():  # a byte a character: no id needs encoding on its own
            self._text = joined.encode("ascii")
            del joined
            sizes = np.fromiter(map(len, texts), np.int64, len(texts))
        else:
            del joined
            encoded = [t.encode(*_ENCODING) for t in texts]
            self._text = b"".join(encoded)
            sizes = np.fromiter(map(len, encoded), np.int64, len(encoded))
            del encoded
        self._ends = np.cumsum(sizes)

    def _bytes(self, row: int) -> bytes:
        start = int(self._ends[row - 1]) if row else 0
        return self._text[start : int(self._ends[row])]

    def _id(self, row: int) -> str:
        return self._bytes(row).decode(*_ENCODING)

    def get(self, key: Any, default: Any = None) -> Any:  # pragma: no cover - subclasses
        raise NotImplementedError

    def __getitem__(self, key: str) -> int:
        row: int | None = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return int(self._ends.size)

    def __iter__(self) -> Iterator[str]:
        """The ids in row order."""
        return (self._id(row) for row in range(len(self)))

    @property
    def nbytes(self) -> int:
        """The bytes its arrays and text hold."""
        return self._ends.nbytes + len(self._text)


class RowNumbers(_Texts):
    """``{id: row}`` for ids given in row order (0, 1, ...): what
    ``dict(zip(ids, range(len(ids))))`` answers, as a read-only mapping.

    The ids must be distinct (a :class:`ValueError` otherwise). Hashes are Python's own,
    which are the same for the same text within a process: the mapping is never stored.
    """

    __slots__ = ("_hashes", "_rows")

    def __init__(self, ids: Iterable[str]) -> None:
        texts = [str(i) for i in ids]
        hashes = np.fromiter(map(hash, texts), dtype=np.int64, count=len(texts))
        order = np.argsort(hashes)
        self._hashes = hashes[order]
        self._rows = order.astype(np.int32 if len(texts) < 2**31 else np.int64)
        super().__init__(texts)
        self._check_distinct()

    @property
    def nbytes(self) -> int:
        """The bytes its arrays and text hold."""
        return super().nbytes + self._hashes.nbytes + self._rows.nbytes

    def _check_distinct(self) -> None:
        """Raise ValueError when an id is given twice: ids whose hashes are equal are
        distinct texts, or the same."""
        hashes = self._hashes
        same = hashes[1:] == hashes[:-1]
        for start in np.flatnonzero(same & ~np.concatenate(([False], same[:-1]))):
            stop = int(start) + 1
            while stop < hashes.size and hashes[stop] == hashes[start]:
                stop += 1
            seen: set[bytes] = set()
            for row in sorted(int(r) for r in self._rows[start:stop]):
                if self._bytes(row) in seen:
                    raise ValueError(f"the id {self._id(row)!r} is given twice")
                seen.add(self._bytes(row))

    def get(self, key: Any, default: Any = None) -> Any:
        """The row of ``key``, else ``default``."""
        if not isinstance(key, str):
            return default
        wanted = hash(key)
        hashes = self._hashes
        at = int(hashes.searchsorted(wanted))
        encoded = None
        while at < hashes.size and hashes[at] == wanted:
            row = int(self._rows[at])
            if encoded is None:
                encoded = key.encode(*_ENCODING)
            if self._bytes(row) == encoded:
                return row
            at += 1
        return default


class SortedRowNumbers(_Texts):
    """:class:`RowNumbers` of ids given sorted (as Python sorts text, which is the order
    of their UTF-8 bytes) and distinct: each id's row is its place in that order. Ids not
    sorted are not all found (it does not check: that would cost what it saves)."""

    __slots__ = ()

    def __init__(self, ids: Iterable[str]) -> None:
        super().__init__([str(i) for i in ids])

    def get(self, key: Any, default: Any = None) -> Any:
        """The row of ``key``, else ``default``."""
        if not isinstance(key, str):
            return default
        wanted = key.encode(*_ENCODING)
        low, high = 0, len(self)
        while low < high:  # the first row whose id is not before the key
            middle = (low + high) // 2
            if self._bytes(middle) < wanted:
                low = middle + 1
            else:
                high = middle
        return low if low < len(self) and self._bytes(low) == wanted else default
