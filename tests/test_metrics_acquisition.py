"""CAC per channel and period, CLV:CAC, payback and the below-CAC flag, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metrics_helpers import store_with
from retain.errors import DataError
from retain.metrics import CHANNEL_COLUMNS, cac, clv_cac, overview
from retain.store import Store


@pytest.fixture(scope="module")
def store() -> Store:
    """Spend in January and February 2024; customers' channels from three sources.

    search: s1 (30, 20, 40 in Jan, Feb, Mar) and s2 (10 in Jan, 20 in Mar), spend 100;
    social: x (59.99 once), spend 60 - CLV a cent below CAC; email: spend 10, nobody;
    organic: o1, channel only on its first order, no spend; late: acquired in April.
    """
    return store_with(
        [
            ("s1", "2024-01-05", 30, "web"),
            ("s1", "2024-02-05", 20),
            ("s1", "2024-03-05", 40),
            ("s2", "2024-01-10", 10),
            ("s2", "2024-03-10", 20),
            ("x", "2024-01-15", 59.99),
            ("o1", "2024-02-20", 25, " Organic "),
            ("late", "2024-04-02", 500, "search"),
        ],
        customers=[("s1", "Search"), ("s2", "search "), ("x", "social"), ("o1", None)],
        spend=[
            ("2024-01-01", "search", 60),
            ("2024-01-20", "Search", 40),
            ("2024-01-02", "social", 60),
            ("2024-02-28", "email", 10),
        ],
    )


def test_cac_per_channel_and_month(store: Store) -> None:
    frame = cac(store, as_of="2024-04-30").set_index(["period", "channel"])
    assert frame.loc[("2024-01", "search"), "spend"] == 100
    assert frame.loc[("2024-01", "search"), "new_customers"] == 2
    assert frame.loc[("2024-01", "search"), "cac"] == 50
    assert frame.loc[("2024-01", "social"), "cac"] == 60
    # organic has no spend rows: its cost is unknown, not 0
    assert np.isnan(frame.loc[("2024-02", "organic"), "cac"])
    assert np.isnan(frame.loc[("2024-02", "email"), "cac"])  # spend, nobody acquired
    # the late customer has no customers row: the channel of the first order
    assert frame.loc[("2024-04", "search"), "new_customers"] == 1


def test_clv_cac_payback_and_flags(store: Store) -> None:
    frame = clv_cac(store, as_of="2024-04-30")
    assert list(frame.columns) == CHANNEL_COLUMNS
    rows = frame.set_index("channel")
    assert frame["channel"].iloc[-1] == "all"
    search = rows.loc["search"]
    # the late customer was acquired after the last spend day: left out
    assert (search["spend"], search["new_customers"], search["cac"]) == (100, 2, 50)
    assert search["clv"] == pytest.approx((90 + 30) / 2)
    assert search["clv_cac"] == pytest.approx(60 / 50)
    # mean cumulative margin: 20 (Jan), 30 (Feb), 60 (Mar) >= 50: two months after
    assert search["payback_months"] == 2
    assert not search["below_cac"]
    social = rows.loc["social"]
    assert social["below_cac"] and social["clv"] == pytest.approx(59.99)
    assert "below CAC" in social["note"] and "-0.01" in social["note"]
    assert pd.isna(social["payback_months"])
    email = rows.loc["email"]
    assert email["below_cac"] and email["new_customers"] == 0
    assert "acquired no customers" in email["note"]
    organic = rows.loc["organic"]
    assert np.isnan(organic["cac"]) and not organic["below_cac"] and np.isnan(organic["clv_cac"])
    assert "no marketing spend recorded" in organic["note"]
    blended = rows.loc["all"]
    assert blended["spend"] == 170 and blended["new_customers"] == 4
    assert blended["cac"] == pytest.approx(42.5)
    assert blended["clv"] == pytest.approx((90 + 30 + 59.99 + 25) / 4)


def test_margin_and_horizon(store: Store) -> None:
    rows = clv_cac(store, margin=0.5, horizon_months=2, as_of="2024-04-30").set_index("channel")
    # first two months: (30 + 10) / 2 + 20 / 2 = 30, times the margin
    assert rows.loc["search", "clv"] == pytest.approx(15)
    assert rows.loc["search", "below_cac"]
    # margin 0.5: 10, 15, 30 -> never reaches 50 in the months seen
    assert rows["payback_months"].isna()["search"]


def test_no_spend_gives_an_empty_table_and_no_cac_in_the_overview() -> None:
    store = store_with([("a", "2024-01-05", 10)])
    frame = clv_cac(store)
    assert frame.empty and frame.attrs["note"] == "no marketing spend"
    headline = overview(store)
    assert headline["cac"] is None and headline["clv_cac"] is None


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_the_overview_gives_the_blended_row_of_clv_cac(store: Store, margin: float) -> None:
    # the overview measures the blended CAC in its own pass: it must agree with the table's
    blended = clv_cac(store, margin=margin, as_of="2024-04-30").set_index("channel").loc["all"]
    headline = overview(store, margin=margin, as_of="2024-04-30")
    assert headline["cac"] == pytest.approx(blended["cac"])
    assert headline["clv_cac"] == pytest.approx(blended["clv_cac"])
    assert headline["clv_cac"] == pytest.approx(margin * (90 + 30 + 59.99 + 25) / 4 / 42.5)


def test_bad_arguments(store: Store) -> None:
    with pytest.raises(DataError, match="horizon_months"):
        clv_cac(store, horizon_months=0)
    with pytest.raises(DataError, match="margin"):
        clv_cac(store, margin=2)
