"""Fill a store's tables from frames, for the tests' small hand-made stores."""

from __future__ import annotations

from collections.abc import Mapping

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
