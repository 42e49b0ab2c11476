"""summarize: the RFM summary of the buy-till-you-die literature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import retain
from retain.datasets import load_cdnow
from retain.errors import ArgumentError, DataError, SchemaError
from retain.features import customer_table, summarize_split
from retain.store import Store

TX = pd.DataFrame(
    {
        "who": ["a", "a", "a", "a", "b", "c"],
        "when": pd.to_datetime(
            [
                "2025-01-01 09:00",
                "2025-01-01 18:00",
                "2025-01-08 00:00",
                "2025-01-15 00:00",
                "2025-01-10 00:00",
                "2025-02-01 00:00",
            ]
        ),
        "value": [10.0, 5.0, 30.0, 20.0, 7.0, 99.0],
    }
)


def test_hand_checked_summary_in_days():
    s = retain.summarize(
        TX, customer_id="who", timestamp="when", amount="value", observation_end="2025-01-31"
    )
    # c bought after the observation end: not a customer yet
    assert list(s.index) == ["a", "b"]
    a = s.loc["a"]
    # two purchases on 1 January count as one period worth 15
    assert a["frequency"] == 2
    assert a["recency"] == 14
    assert a["T"] == 30
    # the first period (15) is left out of monetary: mean of 30 and 20
    assert a["monetary"] == 25
    b = s.loc["b"]
    assert (b["frequency"], b["recency"], b["T"], b["monetary"]) == (0, 0, 21, 0)
    assert s.attrs == {"unit": "D", "grain": "D", "observation_end": "2025-01-31"}


def test_weeks_and_weekly_grain():
    s = retain.summarize(
        TX,
        customer_id="who",
        timestamp="when",
        amount="value",
        observation_end="2025-01-31",
        unit="W",
    )
    assert s.loc["a", "recency"] == pytest.approx(2.0)
    assert s.loc["a", "T"] == pytest.approx(30 / 7)
    weekly = retain.summarize(
        TX,
        customer_id="who",
        timestamp="when",
        amount="value",
        observation_end="2025-01-31",
        unit="W",
        grain="W",
    )
    # 1 Jan (Wed) and 8 Jan fall in different weeks, 15 Jan in a third
    assert weekly.loc["a", "frequency"] == 2
    assert weekly.attrs["grain"] == "W"


# 2025-01-08 is a Wednesday; its week runs Monday 6 to Sunday 12 January
BEFORE_CUTOFF = [
    ("p", "2025-01-01 10:00", 10.0),  # the week before
    ("p", "2025-01-07 10:00", 20.0),  # the cut-off's week, before it
    ("p", "2025-01-08 23:30", 1.0),  # late on the observation day: counted
    ("q", "2025-01-02 10:00", 5.0),
]
AFTER_CUTOFF = [
    ("p", "2025-01-11 10:00", 40.0),  # Saturday of the cut-off's week
    ("q", "2025-01-10 10:00", 50.0),  # Friday of the cut-off's week
    ("r", "2025-01-09 00:00", 70.0),  # the day after: not a customer yet
]


def _orders(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["who", "when", "value"])
    frame["when"] = pd.to_datetime(frame["when"])
    return frame


@pytest.mark.parametrize(("grain", "unit"), [("W", "W"), ("D", "D"), ("D", "W"), ("W", "D")])
def test_orders_after_the_observation_day_are_not_counted(grain, unit):
    kwargs = dict(
        customer_id="who",
        timestamp="when",
        amount="value",
        observation_end="2025-01-08",
        grain=grain,
        unit=unit,
    )
    with_future = retain.summarize(_orders(BEFORE_CUTOFF + AFTER_CUTOFF), **kwargs)
    without = retain.summarize(_orders(BEFORE_CUTOFF), **kwargs)
    pd.testing.assert_frame_equal(with_future, without)
    assert list(with_future.index) == ["p", "q"]
    days = {"D": 1, "W": 7}[unit]
    p, q = with_future.loc["p"], with_future.loc["q"]
    if grain == "W":
        # p: the weeks of 30 Dec (10) and 6 Jan (20 + 1); Saturday's 40 is not in it
        assert (p["frequency"], p["monetary"]) == (1, 21.0)
        assert p["recency"] == pytest.approx(7 / days)
        assert p["T"] == pytest.approx(7 / days)
        # q: Friday's purchase would have been a repeat purchase worth 50
        assert (q["frequency"], q["recency"], q["monetary"]) == (0, 0.0, 0.0)
        assert q["T"] == pytest.approx(7 / days)
    else:
        # p: 1, 7 and 8 January (the evening order counts: the end of the day)
        assert (p["frequency"], p["monetary"]) == (2, 10.5)
        assert p["recency"] == pytest.approx(7 / days)
        assert p["T"] == pytest.approx(7 / days)
        assert (q["frequency"], q["recency"], q["monetary"]) == (0, 0.0, 0.0)
        assert q["T"] == pytest.approx(6 / days)


def test_observation_end_with_a_time_of_day_keeps_the_whole_day():
    kwargs = dict(customer_id="who", timestamp="when", amount="value", grain="W", unit="W")
    orders = _orders(BEFORE_CUTOFF + AFTER_CUTOFF)
    at_noon = retain.summarize(orders, observation_end="2025-01-08 12:00", **kwargs)
    pd.testing.assert_frame_equal(
        at_noon, retain.summarize(orders, observation_end="2025-01-08", **kwargs)
    )
    assert at_noon.loc["p", "monetary"] == 21.0


def test_default_observation_end_is_last_purchase():
    s = retain.summarize(TX, customer_id="who", timestamp="when", amount="value")
    assert s.attrs["observation_end"] == "2025-02-01"
    assert s.loc["c", "T"] == 0


def test_polars_and_arrow_inputs_agree():
    kwargs = dict(customer_id="who", timestamp="when", amount="value", observation_end="2025-01-31")
    expected = retain.summarize(TX, **kwargs)
    for frame in (pl.from_pandas(TX), pa.Table.from_pandas(TX)):
        pd.testing.assert_frame_equal(retain.summarize(frame, **kwargs), expected)


def test_cdnow_sample_published_totals():
    """Fader, Hardie & Lee (2005): 2,357 customers, 2,457 repeat purchases in the
    39-week calibration period, 946 repeat buyers."""
    s = retain.summarize(load_cdnow(sample=True), observation_end="1997-09-30", unit="W")
    assert len(s) == 2357
    assert s["frequency"].sum() == 2457
    assert (s["frequency"] > 0).sum() == 946
    assert s["T"].max() == pytest.approx(38.857, abs=1e-3)


def test_store_input_matches_frame_input(cdnow_sample_db: Path):
    with Store(cdnow_sample_db, read_only=True) as store:
        from_store = retain.summarize(store, observation_end="1997-09-30", unit="W")
        top = customer_table(store, limit=3)
    from_frame = retain.summarize(load_cdnow(sample=True), observation_end="1997-09-30", unit="W")
    pd.testing.assert_frame_equal(from_store, from_frame)
    assert len(top) == 3
    assert top["net_revenue"].is_monotonic_decreasing


def test_bad_arguments():
    with pytest.raises(SchemaError, match="lack the column"):
        retain.summarize(TX)
    with pytest.raises(ValueError, match="unit"):
        retain.summarize(TX, customer_id="who", timestamp="when", amount="value", unit="M")
    with pytest.raises(DataError, match="no transactions"):
        retain.summarize(
            TX, customer_id="who", timestamp="when", amount="value", observation_end="2024-01-01"
        )


@pytest.mark.parametrize(("grain", "unit"), [("D", "D"), ("W", "W"), ("W", "D")])
@pytest.mark.parametrize("split_day", ["2025-01-08", "2025-01-10", "2025-01-12"])
def test_split_summary_is_two_summaries_and_the_purchases_between(grain, unit, split_day):
    """2025-01-08 is a Wednesday (its week runs from Monday the 6th), the 12th a Sunday."""
    orders = pd.concat(
        [
            TX,
            pd.DataFrame(
                {
                    "who": ["b", "b", "d", "a", "a", "e", "e"],
                    # b: again in the week of the 10th and the next; d: after the split
                    # only; a: on Thursday the 9th and after the observation day; e: on
                    # the 2nd and on Saturday the 11th
                    "when": pd.to_datetime(
                        [
                            "2025-01-11 00:00",
                            "2025-01-14 23:00",
                            "2025-01-13 00:00",
                            "2025-01-09 12:00",
                            "2025-02-02 00:00",
                            "2025-01-02 00:00",
                            "2025-01-11 00:00",
                        ]
                    ),
                    "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                }
            ),
        ],
        ignore_index=True,
    )
    names = {"customer_id": "who", "timestamp": "when", "unit": unit, "grain": grain}
    split = summarize_split(
        orders, split_day, observation_end="2025-02-01", amount="value", **names
    )
    calibration = retain.summarize(orders, amount=None, observation_end=split_day, **names)
    full = retain.summarize(orders, amount="value", observation_end="2025-02-01", **names)
    pd.testing.assert_frame_equal(split.calibration, calibration)
    pd.testing.assert_frame_equal(split.full, full)
    assert split.calibration.attrs == calibration.attrs
    assert split.full.attrs == full.attrs
    # the purchases after the split day: distinct periods the calibration has not
    # counted, by hand from the orders
    cut = pd.Timestamp(split_day) + pd.Timedelta(days=1)
    stop = pd.Timestamp("2025-02-02")
    kept = orders[orders["when"] < stop].copy()
    kept["period"] = kept["when"].dt.to_period("W" if grain == "W" else "D").dt.start_time
    periods = kept.groupby(["who", "period"])["when"].min().reset_index()
    later = periods[periods["when"] >= cut]
    later = later[later["who"].isin(calibration.index)]
    purchases = later.groupby("who").size().reindex(calibration.index, fill_value=0)
    assert split.holdout_purchases.tolist() == purchases.astype(float).tolist()
    first = (later.groupby("who")["when"].min().dt.normalize() - pd.Timestamp(split_day)).dt.days
    expected_first = first.reindex(calibration.index).astype(float).to_numpy()
    np.testing.assert_array_equal(split.first_holdout_day, expected_first)
    days = (later["when"].dt.normalize() - pd.Timestamp(split_day)).dt.days.value_counts()
    assert dict(
        zip(split.holdout_days.tolist(), split.holdout_day_purchases.tolist(), strict=True)
    ) == {int(day): int(n) for day, n in days.items()}
    assert int(split.holdout_day_purchases.sum()) == int(split.holdout_purchases.sum())
    if grain == "W" and split_day == "2025-01-08":
        # a's Thursday is in the week a had bought in by the split: not a purchase after
        # it; e had not bought in that week by then: its Saturday is one
        held = dict(zip(split.calibration.index, split.holdout_purchases, strict=True))
        assert held == {"a": 1.0, "e": 1.0}


def test_split_summary_from_a_store_matches_frame_input(cdnow_sample_db: Path):
    with Store(cdnow_sample_db, read_only=True) as store:
        from_store = summarize_split(store, "1997-09-30", observation_end="1998-06-30", unit="W")
    frame = summarize_split(
        load_cdnow(sample=True), "1997-09-30", observation_end="1998-06-30", unit="W"
    )
    pd.testing.assert_frame_equal(from_store.full, frame.full)
    pd.testing.assert_frame_equal(from_store.calibration, frame.calibration)
    np.testing.assert_array_equal(from_store.holdout_purchases, frame.holdout_purchases)


def test_split_summary_refuses_a_split_on_or_after_the_end_and_no_calibration():
    with pytest.raises(ArgumentError, match="must come before"):
        summarize_split(
            TX,
            "2025-01-31",
            observation_end="2025-01-31",
            customer_id="who",
            timestamp="when",
            amount="value",
        )
    with pytest.raises(DataError, match="on or before the observation end 2024-12-31"):
        summarize_split(
            TX,
            "2024-12-31",
            observation_end="2025-01-31",
            customer_id="who",
            timestamp="when",
            amount="value",
        )
