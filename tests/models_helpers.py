"""Data shared by the model tests, built once per test session."""

from __future__ import annotations

from functools import cache

import pandas as pd

import retain
from retain.datasets import load_cdnow
from retain.models import BetaGeo, GammaGamma, ParetoNBD

CALIBRATION_END = "1997-09-30"


@cache
def cdnow_transactions() -> pd.DataFrame:
    """The CDNOW sample's purchase records (2,357 customers, to 1998-06-30)."""
    return load_cdnow(sample=True)


@cache
def cdnow_summary() -> pd.DataFrame:
    """The papers' calibration summary: weeks, purchases merged by day, to 1997-09-30."""
    return retain.summarize(
        cdnow_transactions(), unit="W", grain="D", observation_end=CALIBRATION_END
    )


@cache
def bgnbd() -> BetaGeo:
    return BetaGeo().fit(cdnow_summary())


@cache
def pnbd() -> ParetoNBD:
    return ParetoNBD().fit(cdnow_summary())


@cache
def gamma_gamma() -> GammaGamma:
    return GammaGamma().fit(cdnow_summary())


def customers(rows: list[tuple[float, float, float]], unit: str = "W") -> pd.DataFrame:
    """A summary frame from (frequency, recency, T) triples, in ``unit``."""
    frame = pd.DataFrame(rows, columns=["frequency", "recency", "T"])
    frame.attrs.update({"unit": unit, "grain": "D"})
    return frame
