"""Predictive ranges on the CDNOW holdout: do they hold what the customers then did?"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest

from models_helpers import CALIBRATION_END, cdnow_summary, cdnow_transactions, gamma_gamma
from retain.models import ModifiedBetaGeo, ParetoNBD, TransactionModel

HOLDOUT_WEEKS = 39


@cache
def holdout_actuals() -> pd.DataFrame:
    """Each calibration customer's repeat purchases (distinct days) and net revenue in the
    39 weeks after 1997-09-30."""
    tx = cdnow_transactions()
    stamp = pd.to_datetime(tx["ordered_at"])
    start = pd.Timestamp(CALIBRATION_END) + pd.Timedelta(days=1)
    after = tx[(stamp >= start) & (stamp < start + pd.Timedelta(weeks=HOLDOUT_WEEKS))]
    days = after.assign(day=pd.to_datetime(after["ordered_at"]).dt.normalize())
    index = cdnow_summary().index
    return pd.DataFrame(
        {
            "purchases": days.groupby("customer_id")["day"].nunique().reindex(index, fill_value=0),
            "revenue": after.groupby("customer_id")["net_revenue"]
            .sum()
            .reindex(index, fill_value=0),
        }
    )


@pytest.mark.parametrize("model", [ModifiedBetaGeo, ParetoNBD])
def test_purchase_ranges_hold_the_holdout_counts_of_most_customers(
    model: type[TransactionModel],
) -> None:
    """The issue's target: 85-97% of customers inside their 90% range (it was 0.2-2.6%
    with the parameter-uncertainty band)."""
    fitted = model().fit(cdnow_summary())
    ranges = fitted.expected_purchases(cdnow_summary(), HOLDOUT_WEEKS, interval=0.9)
    actual = holdout_actuals()["purchases"]
    inside = ((actual >= ranges["low"]) & (actual <= ranges["high"])).mean()
    assert 0.85 <= inside <= 0.97
    band = fitted.expected_purchases(cdnow_summary(), HOLDOUT_WEEKS, confidence=0.9)
    in_band = ((actual >= band["mean_low"]) & (actual <= band["mean_high"])).mean()
    assert in_band < 0.1  # the band of the mean is no range for the customer


@pytest.mark.parametrize("model", [ModifiedBetaGeo, ParetoNBD])
def test_value_ranges_hold_the_holdout_revenue_of_most_customers(
    model: type[TransactionModel],
) -> None:
    fitted = model().fit(cdnow_summary())
    ranges = fitted.clv(
        cdnow_summary(), gamma_gamma=gamma_gamma(), horizon=HOLDOUT_WEEKS, interval=0.9
    )
    revenue = holdout_actuals()["revenue"]
    inside = ((revenue >= ranges["low"] - 1e-9) & (revenue <= ranges["high"] + 1e-9)).mean()
    assert 0.80 <= inside <= 0.97
    assert np.isfinite(ranges.to_numpy()).all()
