"""Reader for the CDNOW files of the buy-till-you-die literature.

Two layouts exist: the master file (a header line, then customer id, date
YYYYMMDD, number of CDs, dollar value) and the sample (no header; customer id,
id in the master file, date, number of CDs, dollar value). Each line is one
purchase record; the ingest makes it an order whose id is the customer and the
line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from retain.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from retain.ingest.load import Loader

COLUMNS = ["customer_id", "date", "number_of_cds", "dollar_value"]
MAPPING = {"ordered_at": "date", "net_revenue": "dollar_value"}


def read_text(path: str | Path) -> pd.DataFrame:
    """The file's records as text, with ``_retain_row``, the line each came from."""
    import pandas as pd  # a CDNOW file only

    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    if raw.empty:
        raise DataError("the file holds no rows", file=str(path))
    has_header = not str(raw.iloc[0, 0]).isdigit()
    first_line = 2 if has_header else 1
    if has_header:
        raw = raw.iloc[1:].reset_index(drop=True)
    if raw.shape[1] == 5:
        raw = raw.drop(columns=1)
    if raw.shape[1] != 4:
        raise DataError(
            f"a CDNOW file has 4 or 5 whitespace-separated columns, this one has {raw.shape[1]}",
            file=str(path),
        )
    raw.columns = COLUMNS
    raw["customer_id"] = raw["customer_id"].str.lstrip("0").replace("", "0")
    raw["_retain_row"] = range(first_line, first_line + len(raw))
    return raw


def stage(loader: Loader) -> list[str]:
    """Stage a CDNOW file as ``_raw`` for the orders validator; return its columns."""
    raw = read_text(loader.path)
    raw.insert(0, "order_id", raw["customer_id"] + "-" + raw["_retain_row"].astype(str))
    loader.con.register("_cdnow_frame", raw)
    loader.drop_raw()
    loader.con.execute("CREATE OR REPLACE TEMP TABLE _raw AS SELECT * FROM _cdnow_frame")
    loader.con.unregister("_cdnow_frame")
    return ["order_id", *COLUMNS]


def read_cdnow(path: str | Path) -> pd.DataFrame:
    """Parse a CDNOW file (plain or .gz) into customer_id, ordered_at, quantity, net_revenue."""
    import pandas as pd

    raw = read_text(path)
    # exactly 8 digits: pandas reads 1997013 as 1997-01-03, yet it could be 1997-10-03
    compact = raw["date"].str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    ordered_at = pd.to_datetime(raw["date"].where(compact), format="%Y%m%d", errors="coerce")
    bad = ordered_at.isna()
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise DataError(
            "unreadable date",
            file=str(path),
            row=int(raw["_retain_row"].iloc[i]),
            column="date",
            value=raw["date"].iloc[i],
            expected="a date as YYYYMMDD, exactly 8 digits",
        )
    return pd.DataFrame(
        {
            "customer_id": raw["customer_id"],
            "ordered_at": ordered_at,
            "quantity": pd.to_numeric(raw["number_of_cds"]),
            "net_revenue": pd.to_numeric(raw["dollar_value"]),
        }
    )
