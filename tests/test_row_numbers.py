"""Row numbers of ids: every id's row as a dict of them gives it, for ids of any text,
hashes that collide, ids it does not hold and ids given twice; for sorted ids, found by
their text alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retain.row_numbers import RowNumbers, SortedRowNumbers


def assert_same(rows: RowNumbers | SortedRowNumbers, ids: list[str], absent: list[str]) -> None:
    expected = dict(zip(ids, range(len(ids)), strict=True))
    assert len(rows) == len(expected)
    assert list(rows) == list(expected)
    assert rows == expected
    for customer_id, row in expected.items():
        assert rows[customer_id] == row and rows.get(customer_id) == row
        assert customer_id in rows
    for other in absent:
        assert other not in expected
        assert other not in rows and rows.get(other) is None and rows.get(other, -1) == -1
        with pytest.raises(KeyError):
            rows[other]


@given(st.lists(st.text(), unique=True, max_size=60), st.lists(st.text(), max_size=20))
def test_each_id_has_its_row(ids: list[str], others: list[str]) -> None:
    absent = [o for o in others if o not in ids]
    assert_same(RowNumbers(ids), ids, absent)
    assert_same(SortedRowNumbers(sorted(ids)), sorted(ids), absent)


def test_a_million_like_ids_and_what_is_not_there() -> None:
    ids = [f"c{i}" for i in np.random.default_rng(3).permutation(200_000)]
    ids += ["Zed.Smith@shop.example", "ab/7", "ünï", "\ud800 lone surrogate", ""]
    absent = ["c200000", "C1", "zed.smith@shop.example", " ab/7", "\U0001f600", "\ud801"]
    assert_same(RowNumbers(ids), ids, absent)
    assert_same(SortedRowNumbers(sorted(ids)), sorted(ids), absent)
    assert SortedRowNumbers(sorted(ids)).get(7) is None
    assert RowNumbers(ids).get(7) is None  # not text: never an id


def test_ids_whose_hashes_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids hashed alike (two hashes for them all): each found by its text among them."""
    import retain.row_numbers as module

    monkeypatch.setattr(module, "hash", lambda text: len(text) % 2, raising=False)
    ids = ["a", "bb", "c", "dd", "e", "ffff"]
    assert_same(RowNumbers(ids), ids, ["g", "aa", "", "ffffff"])


def test_an_id_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'b' is given twice"):
        RowNumbers(["a", "b", "c", "b"])


def test_an_id_given_twice_among_colliding_hashes_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import retain.row_numbers as module

    monkeypatch.setattr(module, "hash", lambda text: 0, raising=False)
    RowNumbers(["a", "b", "c"])
    with pytest.raises(ValueError, match="'a' is given twice"):
        RowNumbers(["a", "b", "c", "a", "d"])
