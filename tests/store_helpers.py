"""Fill a store's tables from frames, for the tests' small hand-made stores."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from retain.ingest import ingest
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def store_copy(db: Path, folder: Path) -> Path:
    """A copy of the store ``db`` in ``folder``, for a test that writes to it."""
    path = folder / "copy.duckdb"
    shutil.copy(db, path)
    return path


def store_of(folder: Path, **files: str) -> Path:
    """A store in ``folder`` holding ``orders`` (observed to 2024-03-31) and, when given,
    ``lines`` and ``customers``: each the text of a canonical CSV file."""
    path = folder / "store.duckdb"
    with Store(path) as store:
        for kind, fmt in (("orders", "orders"), ("lines", "lines"), ("customers", "customers")):
            if kind in files:
                (folder / f"{kind}.csv").write_text(files[kind])
                as_of = "2024-03-31" if kind == "orders" else None
                ingest(store, folder / f"{kind}.csv", format=fmt, as_of=as_of)
    return path
