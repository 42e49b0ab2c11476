"""Delimited text files as they arrive: compression, encoding, line endings and records.

A CSV file reaches the store through DuckDB's CSV reader, which wants UTF-8
with one kind of line ending. This module makes sure it gets that, and finds
where each record of the file starts, so that every row keeps the line number
a text editor shows:

- ``.gz`` files are read through gzip; a file that is not gzip says so;
- the encoding is the one given (``--encoding``), else the one a byte-order
  mark names (UTF-8, UTF-16 or UTF-32), else UTF-8; a file in another
  encoding, with mixed line endings (LF and CRLF), or with classic Mac ones
  (CR alone), is copied once to a temporary UTF-8 file with LF endings;
- :func:`scan_records` returns the first line of every record (a record is
  one line, or several when a quoted value holds line breaks) and which
  records are empty lines.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from retain.errors import ArgumentError, DataError

# Longest BOM first: UTF-32-LE's starts with UTF-16-LE's.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_UTF8 = ("utf-8", "utf-8-sig")
_BLOCK = 1 << 24  # bytes read at a time (16 MiB)


def check_encoding(name: str) -> str:
    """The codec's canonical name for an encoding a user gave (``cp1252``, ``latin-1``,
    ``utf-16``); :class:`ArgumentError` when Python knows no such encoding."""
    try:
        return codecs.lookup(name.strip()).name
    except LookupError:
        raise ArgumentError(
            f"--encoding {name}: unknown encoding; give one such as utf-8, cp1252 "
            "(Windows-1252), latin-1 or utf-16"
        ) from None


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, through gzip for a ``.gz`` file; :class:`DataError` when a
    ``.gz`` file is not gzip."""
    if path.suffix.lower() != ".gz":
        return path.open("rb")
    fh = gzip.open(path, "rb")  # noqa: SIM115 (returned open)
    try:
        fh.peek(1)
    except (OSError, EOFError, zlib.error) as exc:
        fh.close()
        raise DataError(
            f"not a readable gzip file ({exc}); unpack it or fix it", file=str(path)
        ) from None
    return cast(BinaryIO, fh)


def read_blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks; :class:`DataError` for a damaged or cut-short gzip file."""
    with open_binary(path) as fh:
        try:
            yield from iter(lambda: fh.read(_BLOCK), b"")
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"the gzip file is damaged or cut short ({exc})", file=str(path)
            ) from None


def head(path: Path, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of the file (unpacked for ``.gz``)."""
    with open_binary(path) as fh:
        try:
            return fh.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"the gzip file is damaged or cut short ({exc})", file=str(path)
            ) from None


def file_encoding(path: Path, given: str | None = None) -> str:
    """The encoding to read the file in: ``given`` (checked), else the one its byte-order
    mark names, else UTF-8. A file that looks like UTF-16 without a mark is refused with
    the option to pass."""
    if given:
        name = check_encoding(given)
        return "utf-8-sig" if name == "utf-8" else name
    start = head(path, 4096)
    for bom, name in _BOMS:
        if start.startswith(bom):
            return name
    if len(start) >= 4 and start.count(0) * 3 >= len(start):
        even = start[0::2].count(0) > start[1::2].count(0)
        raise DataError(
            "the file looks like UTF-16 without a byte-order mark; pass --encoding "
            + ("utf-16-be" if even else "utf-16-le"),
            file=str(path),
        )
    return "utf-8-sig"


def decode_header(path: Path, encoding: str) -> tuple[str, int] | None:
    """The file's first non-blank line, decoded, and its line number; None for a file
    of blank lines only. :class:`DataError` when that line does not decode."""
    data = head(path)
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    try:
        text = decoder.decode(data, final=len(data) < (1 << 16))
    except UnicodeError as exc:  # UTF-16 without a byte-order mark raises a bare UnicodeError
        raise DataError(
            f"the file does not read as {_label(encoding)} ({_where(exc)}); it may be cut "
            "short, or pass the encoding it was saved in with --encoding",
            file=str(path),
        ) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if any("\udc80" <= ch <= "\udcff" for ch in line):
            raise DataError(
                f"the header is not valid {_label(encoding)}; pass --encoding cp1252 if the "
                "file is Windows-1252 (or the encoding it was saved in: latin-1, utf-16, ...)",
                file=str(path),
                row=number,
            )
        return line, number
    return None


def _where(exc: UnicodeError) -> str:
    """Where and why a decoding failed, in words."""
    if isinstance(exc, UnicodeDecodeError):
        return f"byte {exc.start + 1:,}: {exc.reason}"
    return str(exc)


def _label(encoding: str) -> str:
    return "UTF-8" if encoding in _UTF8 else encoding


@dataclass
class Records:
    """Where the records of a text file start.

    ``lines[i]`` is the 1-based line on which record ``i`` starts (record 0 is
    the file's first line); ``empty[i]`` says whether it is an empty line.
    ``path`` is the UTF-8 file to read (a temporary copy when ``temporary``)."""

    path: Path
    temporary: bool
    lines: np.ndarray
    empty: np.ndarray
    # False when each line was taken for one record because every line holds an even
    # number of quotes: :meth:`rescan` reads the records by the CSV rules instead
    exact: bool = True
    delimiter: str = ","

    def rescan(self) -> None:
        """Find the records by the CSV rules (a quoted value may span lines)."""
        self.lines, self.empty = _scan_csv(self.path, self.delimiter)
        self.exact = True

    def remove(self) -> None:
        """Delete the temporary copy, if one was made."""
        if self.temporary:
            self.path.unlink(missing_ok=True)


def prepare(path: Path, encoding: str, delimiter: str = ",") -> Records:
    """Make the file readable as UTF-8 with one kind of line ending (a temporary copy
    when it is not already) and find where its records start, for fields separated
    by ``delimiter``."""
    has_quote, lf, crlf, cr = _survey(path)
    mixed = 0 < crlf < lf
    # classic Mac line endings (Excel's "CSV (Macintosh)"): a carriage return alone
    mac = lf == 0 and cr > 0
    source, temporary = path, False
    if encoding not in _UTF8 or mixed or mac:
        source, temporary = _utf8_copy(path, encoding, bare_cr=mac), True
        if temporary and encoding not in _UTF8:
            has_quote = has_quote or _survey(source)[0]
    try:
        # quotes that pair up on every line open no value across lines: each line is one
        # record, found by the fast line scan (the CSV scan costs ~1.2 s a million rows)
        fast = has_quote and _quotes_close_on_each_line(source)
        if fast or not has_quote:
            lines, empty = _scan_lines(source)
        else:
            lines, empty = _scan_csv(source, delimiter)
    except BaseException:
        if temporary:
            source.unlink(missing_ok=True)
        raise
    return Records(source, temporary, lines, empty, exact=not fast, delimiter=delimiter)


def _quotes_close_on_each_line(path: Path) -> bool:
    """Whether the quotes (") before every line feed of the file are even in number."""
    before = 0  # quotes before the block
    for block in read_blocks(path):
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == 34)
        # the quotes before each line feed: where the feed falls among the quotes
        if ((np.searchsorted(quotes, np.flatnonzero(data == 10)) + before) & 1).any():
            return False
        before += len(quotes)
    return True


def _survey(path: Path) -> tuple[bool, int, int, int]:
    """Whether the file holds a quote, its line feeds, how many follow a carriage return,
    and its carriage returns."""
    quote = False
    lf = crlf = cr = 0
    previous = b""
    for block in read_blocks(path):
        data = np.frombuffer(block, dtype=np.uint8)
        quote = quote or bool((data == 34).any())
        cr += int(np.count_nonzero(data == 13))
        feeds = np.flatnonzero(data == 10)
        lf += len(feeds)
        before = feeds - 1
        crlf += int(np.count_nonzero(data[before[before >= 0]] == 13))
        if len(feeds) and feeds[0] == 0 and previous.endswith(b"\r"):
            crlf += 1
        previous = block[-1:]
    return quote, lf, crlf, cr


def _utf8_copy(path: Path, encoding: str, bare_cr: bool = False) -> Path:
    """A temporary UTF-8 copy of the file with LF line endings (``bare_cr``: a carriage
    return alone ends a line too). Bytes that are not valid UTF-8 in a UTF-8 file stay
    as they are, for the reader to set their rows aside."""
    errors = "surrogateescape" if encoding in _UTF8 else "strict"
    decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
    fd, name = tempfile.mkstemp(prefix="retain-", suffix=".csv")
    done = 0  # bytes decoded before this block, to place a decoding error
    lines = 1
    try:
        with os.fdopen(fd, "wb") as out:
            carry = ""
            for block in read_blocks(path):
                try:
                    text = carry + decoder.decode(block)
                except UnicodeDecodeError as exc:
                    line = lines + block[: max(exc.start, 0)].count(b"\n")
                    raise DataError(
                        f"byte {block[exc.start : exc.start + 1].hex(' ')} at byte "
                        f"{done + exc.start + 1:,} is not valid {encoding}; pass the encoding "
                        "the file was saved in with --encoding",
                        file=str(path),
                        row=line,
                    ) from None
                except UnicodeError as exc:
                    raise DataError(
                        f"the file does not read as {encoding} ({exc}); pass the encoding "
                        "it was saved in with --encoding",
                        file=str(path),
                        row=lines,
                    ) from None
                done += len(block)
                lines += block.count(b"\n")
                carry = "\r" if text.endswith("\r") else ""
                text = text[:-1] if carry else text
                text = text.replace("\r\n", "\n")
                if bare_cr:
                    text = text.replace("\r", "\n")
                out.write(text.encode("utf-8", errors="surrogateescape"))
            try:
                tail = carry + decoder.decode(b"", final=True)
            except UnicodeError as exc:
                raise DataError(
                    f"the file ends inside a character ({_where(exc)}): it may be cut short",
                    file=str(path),
                    row=lines,
                ) from None
            if bare_cr:
                tail = tail.replace("\r", "\n")
            out.write(tail.encode("utf-8", "surrogateescape"))
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _scan_lines(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of a file without quotes: each line is one."""
    ends: list[np.ndarray] = []
    offset = 0
    last = b"\n"
    for block in read_blocks(path):
        data = np.frombuffer(block, dtype=np.uint8)
        ends.append(np.flatnonzero(data == 10) + offset)
        offset += len(block)
        last = block[-1:]
    feeds = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], feeds + 1])
    stops = np.concatenate([feeds, [offset]])
    if last == b"\n" or offset == 0:  # no record after the final line feed
        starts, stops = starts[:-1], stops[:-1]
    length = stops - starts
    empty = length == 0
    if length.size and (length == 1).any():  # a blank line of a CRLF file holds one CR
        ones = np.flatnonzero(length == 1)
        empty[ones] = _bytes_at(path, starts[ones]) == 13
    lines = np.arange(1, len(starts) + 1, dtype=np.int64)
    return lines, empty


def _bytes_at(path: Path, positions: np.ndarray) -> np.ndarray:
    """The byte at each of the (sorted) ``positions`` of the file."""
    out = np.zeros(len(positions), dtype=np.uint8)
    offset = 0
    for block in read_blocks(path):
        lo, hi = np.searchsorted(positions, [offset, offset + len(block)])
        if hi > lo:
            data = np.frombuffer(block, dtype=np.uint8)
            out[lo:hi] = data[positions[lo:hi] - offset]
        offset += len(block)
    return out


def _scan_csv(path: Path, delimiter: str) -> tuple[np.ndarray, np.ndarray]:
    """Records of a file with quotes, by the CSV rules (a quoted value may span lines)."""
    csv.field_size_limit(sys.maxsize)
    starts: list[int] = []
    empty: list[bool] = []
    with io.TextIOWrapper(
        open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline=""
    ) as text:
        reader = csv.reader(text, delimiter=delimiter, strict=False)
        previous = 0
        try:
            for row in reader:
                starts.append(previous + 1)
                empty.append(not row)
                previous = reader.line_num
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"the gzip file is damaged or cut short ({exc})", file=str(path)
            ) from None
    return np.asarray(starts, dtype=np.int64), np.asarray(empty, dtype=bool)
