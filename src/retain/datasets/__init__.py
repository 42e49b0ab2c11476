"""Real data sets that ship with retain, loadable in one line.

CDNOW: purchases of CDs by 23,570 customers who first bought in the first 12
weeks of 1997, to 30 June 1998 (Fader, Hardie & Lee 2005). The sample holds a
tenth of them (2,357 customers).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

__all__ = ["cdnow_path", "load_cdnow"]


def cdnow_path(sample: bool = False) -> Path:
    """Path of the bundled CDNOW file (gzip-compressed, whitespace separated)."""
    name = "CDNOW_sample.txt.gz" if sample else "CDNOW_master.txt.gz"
    return Path(str(resources.files("retain.datasets") / "data" / name))


def load_cdnow(sample: bool = False) -> pd.DataFrame:
    """CDNOW transactions: one row per purchase record.

    Columns: ``customer_id`` (str), ``ordered_at`` (datetime, midnight of the
    purchase day), ``quantity`` (CDs bought), ``net_revenue`` (US dollars).
    ``sample=True`` gives the 2,357-customer sample used in the papers.
    """
    from retain.ingest.cdnow import read_cdnow

    return read_cdnow(cdnow_path(sample))
