"""What a command pays in imports before it runs: ``retain --help`` loads neither DuckDB
nor pandas nor SciPy, ``retain score`` not SciPy's optimiser or statistics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from retain.store import DEFAULT_PATH

HEAVY = ("pandas", "duckdb", "scipy", "pyarrow")


def loaded_after(code: str) -> set[str]:
    """The top-level modules of HEAVY, and scipy.optimize and scipy.stats, that ``code``
    leaves loaded in a fresh interpreter."""
    probe = (
        "import sys\n"
        f"{code}\n"
        "names = ('pandas', 'duckdb', 'scipy', 'pyarrow', 'scipy.optimize', 'scipy.stats')\n"
        "print('loaded:', *(n for n in names if n in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(result.stdout.splitlines()[-1].split()[1:])


def test_help_loads_no_data_library() -> None:
    code = (
        "from retain.cli import app\n"
        "try:\n"
        "    app(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    assert loaded_after(code) == set()


def test_the_package_loads_its_parts_on_first_use() -> None:
    assert loaded_after("import retain") == set()
    assert {"pandas", "duckdb"} <= loaded_after("import retain; retain.Store")


def test_scoring_loads_no_optimiser_and_no_statistics() -> None:
    loaded = loaded_after("import retain.scoring, retain.segments, retain.metrics")
    assert "scipy.optimize" not in loaded and "scipy.stats" not in loaded


def test_the_cli_default_store_is_the_store_default() -> None:
    from retain.cli import DEFAULT_DB

    assert Path(DEFAULT_PATH) == DEFAULT_DB
