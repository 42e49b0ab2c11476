"""Reader for the CDNOW files of the buy-till-you-die literature.

Two layouts exist: the master file (a header line, then customer id, date
YYYYMMDD, number of CDs, dollar value) and the sample (no header; customer id,
id in the master file, date, number of CDs, dollar value).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retain.errors import DataError


def read_cdnow(path: str | Path) -> pd.DataFrame:
    """Parse a CDNOW file (plain or .gz) into customer_id, ordered_at, quantity, net_revenue."""
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    if raw.empty:
        raise DataError("the file holds no rows", file=str(path))
    has_header = not str(raw.iloc[0, 0]).isdigit()
    first_data_row = 2 if has_header else 1
    if has_header:
        raw = raw.iloc[1:].reset_index(drop=True)
    if raw.shape[1] == 5:
        raw = raw.drop(columns=1)
    if raw.shape[1] != 4:
        raise DataError(
            f"a CDNOW file has 4 or 5 whitespace-separated columns, this one has {raw.shape[1]}",
            file=str(path),
        )
    raw.columns = ["customer_id", "date", "quantity", "net_revenue"]
    ordered_at = pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce")
    bad = ordered_at.isna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            "unreadable date",
            file=str(path),
            row=i + first_data_row,
            column="date",
            value=raw["date"].iloc[i],
            expected="a date as YYYYMMDD",
        )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"].str.lstrip("0").replace("", "0"),
            "ordered_at": ordered_at,
            "quantity": pd.to_numeric(raw["quantity"]),
            "net_revenue": pd.to_numeric(raw["net_revenue"]),
        }
    )
