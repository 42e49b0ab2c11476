"""Shared fixtures: small stores built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from retain.datasets import cdnow_path
from retain.ingest import ingest
from retain.store import Store

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def cdnow_sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store file holding the CDNOW sample (2,357 customers), ingested once."""
    path = tmp_path_factory.mktemp("cdnow") / "sample.duckdb"
    with Store(path) as store:
        ingest(store, cdnow_path(sample=True), format="cdnow", as_of="1998-06-30")
    return path


@pytest.fixture
def store() -> Store:
    """An empty store in memory."""
    with Store(":memory:") as s:
        yield s


# In CI, property tests draw the same examples every run: a failure there is
# reproducible, never a roll of the dice; locally they explore new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
