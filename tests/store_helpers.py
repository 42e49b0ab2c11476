"""Fill a store's tables from frames, for the tests' small hand-made stores."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from retain.store import Store


def insert_frames(store: Store, frames: Mapping[str, pd.DataFrame | None]) -> Store:
    """Insert each frame into the table it is keyed by, column by name; ``None`` is skipped."""
    for table, frame in frames.items():
        if frame is None:
            continue
        store.con.register("incoming", frame)
        columns = ", ".join(frame.columns)
        store.con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM incoming")
        store.con.unregister("incoming")
    return store


def scored_copy(source: Path, path: Path, *, margin: float = 1.0) -> Path:
    """A copy of the store ``source`` at ``path``, fitted (MBG/NBD in weeks) and scored
    with ``margin``: the stores the service tests read."""
    from retain.scoring import fit_store, score_store

    shutil.copy(source, path)
    with Store(path) as store:
        fit_store(store, model="mbgnbd", unit="W")
        score_store(store, margin=margin)
    return path
