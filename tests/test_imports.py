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
    assert loaded_after("import retain; retain.Store") == {"duckdb"}


def test_storing_a_parquet_file_loads_no_pandas_and_no_scipy(tmp_path: Path) -> None:
    """``retain ingest`` of a Parquet file is DuckDB's work: the command pays for
    neither pandas (0.3-0.6 s) nor SciPy."""
    orders, db = tmp_path / "orders.parquet", tmp_path / "store.duckdb"
    code = (
        "import duckdb\n"
        f"duckdb.sql(\"COPY (SELECT 'o' || i AS order_id, 'c' || (i % 7) AS customer_id, "
        f"TIMESTAMP '2025-01-01' + INTERVAL (i) DAY AS ordered_at, 10.0 + i AS net_revenue "
        f"FROM range(40) t(i)) TO '{orders}'\")\n"
        "from retain.cli import app\n"
        "try:\n"
        f"    app(['ingest', '--db', '{db}', '--as-of', '2025-03-01', '{orders}'], "
        "standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = loaded_after(code)
    assert "duckdb" in loaded  # the probe ran the command
    assert not loaded & {"pandas", "scipy"}
    from retain.store import Store

    with Store(db, read_only=True) as store:  # the file was stored
        assert store.scalar("SELECT count(*) FROM orders") == 40


def test_scoring_loads_no_optimiser_and_no_statistics() -> None:
    loaded = loaded_after("import retain.scoring, retain.segments, retain.metrics")
    assert "scipy.optimize" not in loaded and "scipy.stats" not in loaded


def test_the_cli_default_store_is_the_store_default() -> None:
    from retain.cli import DEFAULT_DB

    assert Path(DEFAULT_PATH) == DEFAULT_DB
