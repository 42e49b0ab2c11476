"""Holdout validation: counts by hand on small data, and the CDNOW holdout."""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

import retain
from models_helpers import CALIBRATION_END, cdnow_transactions
from retain.errors import DataError
from retain.models import BetaGeo, ConvergenceWarning
from retain.store import Store
from retain.validate import HoldoutResult, compare, holdout

# a handful of customers cannot pin every parameter down: expected, and said
pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


@cache
def cdnow_holdout(model: str) -> HoldoutResult:
    return holdout(cdnow_transactions(), CALIBRATION_END, model=model, holdout_end="1998-06-30")


def small_orders() -> pd.DataFrame:
    rows = [
        # a: buys in calibration, twice on one holdout day, once more later
        ("a", "2024-01-01"), ("a", "2024-01-15"), ("a", "2024-02-10"), ("a", "2024-02-10"),
        ("a", "2024-03-01"),
        # b: calibration only
        ("b", "2024-01-05"), ("b", "2024-01-20"),
        # c: one calibration purchase, one holdout purchase the day after the end
        ("c", "2024-01-10"), ("c", "2024-02-01"),
        # d: first buys in the holdout: not a calibration customer
        ("d", "2024-02-05"), ("d", "2024-02-06"),
        # e..h: more calibration history so that a model can be fitted
        ("e", "2024-01-02"), ("e", "2024-01-09"), ("e", "2024-01-16"), ("e", "2024-01-23"),
        ("f", "2024-01-03"), ("g", "2024-01-04"), ("g", "2024-01-30"), ("h", "2024-01-06"),
        ("e", "2024-02-20"),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    return frame


def test_holdout_counts_purchases_by_hand():
    result = holdout(small_orders(), "2024-01-31", holdout_end="2024-03-01", unit="D")
    actual = result.per_customer["actual"]
    # a: 2024-02-10 (twice, one day) and 2024-03-01; c: 2024-02-01; e: 2024-02-20
    assert actual.to_dict() == {
        "a": 2.0,
        "b": 0.0,
        "c": 1.0,
        "e": 1.0,
        "f": 0.0,
        "g": 0.0,
        "h": 0.0,
    }
    assert result.actual == 4.0
    assert result.customers == 7  # d first bought in the holdout
    assert result.holdout_days == 30
    assert result.predicted == pytest.approx(result.per_customer["predicted"].sum())
    errors = result.per_customer["predicted"] - actual
    assert result.mae == pytest.approx(errors.abs().mean())
    assert result.rmse == pytest.approx(np.sqrt((errors**2).mean()))
    # tracking: weeks ending Feb 7, 14, 21, 28 and Mar 1 (the partial last week)
    assert list(result.tracking["actual_cumulative"]) == [1.0, 2.0, 3.0, 3.0, 4.0]
    assert str(result.tracking["date"].iloc[-1]) == "2024-03-01"
    assert result.tracking["predicted_cumulative"].iloc[-1] == pytest.approx(result.predicted)
    assert result.next_purchase["buyers"] == 3


def test_weekly_holdout_counts_the_orders_after_the_calibration_day():
    """2024-01-31 is a Wednesday: its week runs Monday 29 January to 4 February."""
    orders = pd.concat(
        [
            small_orders(),
            pd.DataFrame(
                {
                    # g bought on Tuesday 30 January: Friday is the same week, counted once
                    "customer_id": ["g", "b"],
                    # b: Saturday after the holdout end (Wednesday 21 February)
                    "ordered_at": pd.to_datetime(["2024-02-02", "2024-02-24"]),
                }
            ),
        ],
        ignore_index=True,
    )
    calibration = retain.summarize(
        orders, amount=None, observation_end="2024-01-31", unit="W", grain="W"
    )
    # c's purchase on Thursday 1 February is after the calibration end: not a repeat
    assert calibration.loc["c", "frequency"] == 0
    assert calibration.loc["g", "frequency"] == 1
    result = holdout(orders, "2024-01-31", holdout_end="2024-02-21", unit="W", grain="W")
    # a: the week of 5 February (3 March is after the holdout); c: 1 February, in
    # the calibration end's week; e: 20 February; g's Friday and b's Saturday: not
    assert result.per_customer["actual"].to_dict() == {
        "a": 1.0,
        "b": 0.0,
        "c": 1.0,
        "e": 1.0,
        "f": 0.0,
        "g": 0.0,
        "h": 0.0,
    }
    assert result.holdout_days == 21
    # each purchase is placed on its day, not its week's Monday
    assert list(result.tracking["actual_cumulative"]) == [1.0, 2.0, 3.0]
    assert result.next_purchase["buyers"] == 3


def test_holdout_reads_a_store_like_a_frame(tmp_path):
    orders = small_orders()
    orders.insert(0, "order_id", [f"o{i}" for i in range(len(orders))])
    orders["net_revenue"] = 10.0
    with Store(tmp_path / "s.duckdb") as store:
        store.con.register("incoming", orders)
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) "
            "SELECT order_id, customer_id, ordered_at, net_revenue FROM incoming"
        )
        from_store = holdout(store, "2024-01-31", unit="D")
    from_frame = holdout(orders, "2024-01-31", unit="D")
    assert from_store.actual == from_frame.actual
    assert from_store.predicted == pytest.approx(from_frame.predicted)
    assert from_store.holdout_end == "2024-03-01"


def test_holdout_refuses_a_holdout_before_the_calibration_end():
    with pytest.raises(DataError, match="after the calibration end"):
        holdout(small_orders(), "2024-01-31", holdout_end="2024-01-15")
    with pytest.raises(ValueError, match="unknown model"):
        holdout(small_orders(), "2024-01-31", model="arima")


def test_cdnow_holdout_actuals_are_the_papers():
    """FHL (2005): the 2,357 customers made 1,882 repeat purchases in the 39 weeks
    after 1997-09-30. The models forecast that within 20% (BG/NBD and Pareto/NBD
    both under-forecast this holdout in the paper's tracking plot)."""
    for model in ("bgnbd", "mbgnbd", "pnbd"):
        result = cdnow_holdout(model)
        assert result.actual == 1882
        assert result.customers == 2357
        assert result.holdout_days == 273
        assert 0.8 * 1882 < result.predicted < 1882
        tracking = result.tracking
        assert len(tracking) == 39
        assert tracking["actual_cumulative"].iloc[-1] == 1882
        assert (np.diff(tracking["predicted_cumulative"]) > 0).all()
        assert result.mae <= result.rmse


def test_cdnow_next_purchase_windows_catch_half_of_the_observable():
    """Where the whole 25th-75th percentile window lies inside the holdout, about half
    of the next purchases fall inside it and about a quarter on either side (BG/NBD:
    0.53 inside, 0.25 before, 0.23 after, of 110 customers), and the predicted
    medians give dates to few of those who do not buy."""
    result = cdnow_holdout("bgnbd")
    figures = result.next_purchase
    assert figures["buyers"] == result.per_customer["actual"].gt(0).sum()
    assert 50 <= figures["window_customers"] <= 500
    assert 0.40 < figures["window_coverage"] < 0.60
    assert figures["window_coverage"] == figures["window_inside"]
    assert 0.10 < figures["window_before"] < 0.40
    assert 0.10 < figures["window_after"] < 0.40
    shares = figures["window_before"] + figures["window_inside"] + figures["window_after"]
    assert shares == pytest.approx(1.0)
    assert figures["non_buyers_given_a_date"] < figures["buyers_given_a_date"]
    assert 0 < figures["median_error_days"] < 273
    doc = result.to_dict()
    assert doc["tracking"][-1]["actual_cumulative"] == 1882
    assert doc["next_purchase"]["window_customers"] == figures["window_customers"]


def test_window_coverage_counts_the_customers_whose_window_is_observable():
    """Fixed windows (days after 2024-01-31; the holdout is 30 days): first holdout
    purchases a on day 10, c on day 1, e on day 20; b and h do not buy."""
    windows = pd.DataFrame(
        {
            "window_start": [2.0, 5.0, 3.0, 5.0, 5.0, 5.0, 0.0],
            "window_end": [15.0, 25.0, 10.0, 12.0, 40.0, 300.0, 30.0],
            "start_within_horizon": [True] * 7,
            "end_within_horizon": [True, True, True, True, True, False, True],
        },
        index=pd.Index(list("abcefgh"), name="customer_id"),
    )
    horizons: list[float] = []

    def purchase_window(data: pd.DataFrame, *, horizon: float) -> pd.DataFrame:
        horizons.append(horizon)
        return windows.reindex(data.index)

    model = BetaGeo()
    model.purchase_window = purchase_window  # type: ignore[method-assign]
    result = holdout(small_orders(), "2024-01-31", holdout_end="2024-03-01", model=model, unit="D")
    figures = result.next_purchase
    # the windows are not capped at the holdout
    assert horizons == [pytest.approx(300.0)]
    # f ends after the holdout and g beyond the horizon: left out. a inside, c
    # before, e after its window, b and h (no purchase) after
    assert figures["window_customers"] == 5
    assert figures["window_before"] == pytest.approx(1 / 5)
    assert figures["window_inside"] == pytest.approx(1 / 5)
    assert figures["window_coverage"] == pytest.approx(1 / 5)
    assert figures["window_after"] == pytest.approx(3 / 5)
    assert figures["buyers"] == 3


def test_compare_ranks_models_by_rmse():
    table = compare(small_orders(), "2024-01-31", unit="D")
    assert set(table["model"]) == {"bgnbd", "mbgnbd", "pnbd"}
    assert table["rmse"].is_monotonic_increasing
