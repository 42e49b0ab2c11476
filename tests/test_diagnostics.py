"""The model diagnostics behind the Models page: tracking and the P(alive) matrix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import retain
from retain.diagnostics import p_alive_matrix, tracking
from retain.models import BetaGeo, ParetoNBD
from retain.store import Store


@pytest.fixture(scope="module")
def sample_store(cdnow_sample_db: Path):
    with Store(cdnow_sample_db, read_only=True) as store:
        yield store


@pytest.mark.parametrize(("unit", "grain"), [("W", "D"), ("D", "W")])
def test_tracking_counts_every_repeat_purchase_and_sums_each_customers_curve(
    sample_store: Store, unit: str, grain: str
) -> None:
    summary = retain.summarize(sample_store, unit=unit, grain=grain)
    model = BetaGeo().fit(summary)
    frame = tracking(sample_store, model)

    # the actual curve ends at the repeat purchases the model was fitted on
    assert frame["actual_cumulative"].iloc[-1] == summary["frequency"].sum()
    assert frame.attrs["repeat_purchases"] == summary["frequency"].sum()
    assert frame.attrs["customers"] == len(summary) == 2357
    assert frame["date"].iloc[-1] == dt.date(1998, 6, 30)
    assert (np.diff(pd.to_datetime(frame["date"])).astype("timedelta64[D]")[:-1] == 7).all()
    assert frame["actual_cumulative"].is_monotonic_increasing
    assert frame["predicted_cumulative"].is_monotonic_increasing

    # the prediction, customer by customer: E[X(age)] at every week's end, summed
    first = sample_store.query(
        "SELECT customer_id, min(CAST(date_trunc(?, ordered_at) AS DATE)) AS first "
        "FROM orders GROUP BY customer_id",
        ["day" if grain == "D" else "week"],
    )["first"]
    start = pd.Timestamp(frame.attrs["start"])
    for week in (1, 10, len(frame)):
        end = pd.Timestamp(frame["date"].iloc[week - 1])
        seen = end if grain == "D" else end - pd.Timedelta(days=end.weekday())
        age = (seen - pd.to_datetime(first)).dt.days.to_numpy()
        unit_days = 7 if unit == "W" else 1
        expected = model.expected_repeat_purchases(np.maximum(age, 0) / unit_days)
        total = float(np.where(age >= 0, expected, 0.0).sum())
        assert frame["predicted_cumulative"].iloc[week - 1] == pytest.approx(total, rel=1e-9)
        assert start <= end
    # in sample, the BG/NBD tracks the total closely (Fader, Hardie & Lee 2005, fig. 3)
    last = frame.iloc[-1]
    assert last["predicted_cumulative"] == pytest.approx(last["actual_cumulative"], rel=0.1)


def test_tracking_of_a_hand_made_store() -> None:
    """Three customers: a buys on days 0, 3 and 9, b on days 2 and 2 (one day), c on day 8."""
    with Store(":memory:") as store:
        store.con.execute(
            "INSERT INTO orders (order_id, customer_id, ordered_at, net_revenue) VALUES "
            "('1', 'a', TIMESTAMP '2024-01-01 10:00', 1), ('2', 'a', TIMESTAMP '2024-01-04', 1), "
            "('3', 'a', TIMESTAMP '2024-01-10', 1), ('4', 'b', TIMESTAMP '2024-01-03 08:00', 1), "
            "('5', 'b', TIMESTAMP '2024-01-03 18:00', 1), ('6', 'c', TIMESTAMP '2024-01-09', 1)"
        )
        model = ParetoNBD()
        model.params_ = {"r": 0.5, "alpha": 10.0, "s": 0.8, "beta": 12.0}
        model.unit_, model.grain_ = "D", "D"
        frame = tracking(store, model)
    assert list(frame["date"]) == [dt.date(2024, 1, 7), dt.date(2024, 1, 10)]
    # a's day 3, then a's day 9; b's second order is on the same day as the first
    assert list(frame["actual"]) == [1.0, 1.0]
    ages = [[6, 4], [9, 7, 1]]  # days from each customer's first purchase to each week's end
    for week, age in enumerate(ages):
        expected = model.expected_repeat_purchases(np.array(age, dtype=float)).sum()
        assert frame["predicted_cumulative"].iloc[week] == pytest.approx(expected)


def test_p_alive_matrix_is_the_models_p_alive_where_a_customer_can_be() -> None:
    model = BetaGeo()
    model.params_ = {"r": 0.24, "alpha": 4.41, "a": 0.79, "b": 2.43}
    model.unit_, model.grain_ = "W", "D"
    since = [0.0, 10.0, 20.0, 30.0, 40.0]
    matrix = p_alive_matrix(model, T=40.0, frequencies=range(0, 6), since_last=since)
    values = matrix.to_numpy()
    assert values.shape == (6, 5)
    # one-time buyers: their last purchase is their first, 40 weeks ago
    assert np.isnan(values[0, :-1]).all() and values[0, -1] == pytest.approx(1.0)
    repeat = values[1:]
    assert ((repeat >= 0) & (repeat <= 1)).all()
    assert (np.diff(repeat, axis=1) <= 1e-12).all()  # the longer ago, the less likely alive
    customers = pd.DataFrame({"frequency": [3.0], "recency": [30.0], "T": [40.0]})
    assert matrix.loc[3, 10.0] == pytest.approx(model.p_alive(customers).iloc[0])
