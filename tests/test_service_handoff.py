"""``retain ingest`` while ``retain serve`` holds the store: the file is handed to the
service, in real processes (DuckDB's lock is a process's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retain.service.handoff import running_service, service_note
from store_helpers import store_of
from test_service_adversarial import request, retain_serve

KEY = "a-handoff-test-key-of-length"
ORDERS = """order_id,customer_id,ordered_at,net_revenue
o1,a,2024-01-10,10.00
o2,b,2024-02-01,5.50
"""
MORE = """order_id,customer_id,ordered_at,net_revenue
h1,a,2024-03-01,7.25
h2,new,2024-03-02,12.00
h3,new,not a date,1.00
"""


def cli(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RETAIN_API_KEY": key or ""}
    return subprocess.run(
        [sys.executable, "-m", "retain.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    db = store_of(tmp_path, orders=ORDERS)
    with retain_serve(db, {"RETAIN_API_KEY": KEY}) as (process, port):
        yield db, port, process


def test_a_file_ingested_while_the_service_runs_lands_through_it(
    served: tuple[Path, int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    db, port, process = served
    assert running_service(db) == f"http://127.0.0.1:{port}"
    more = tmp_path / "more.csv"
    more.write_text(MORE)
    done = cli("ingest", "--db", str(db), "--as-of", "2024-03-31", str(more))
    assert done.returncode == 0, done.stderr
    assert "held by the running service" in done.stdout
    assert "loaded 2 orders" in done.stdout and "1 row" in done.stdout  # one quarantined
    # the service's own pages read the orders at once
    status, body = request(port, "GET", "/api/orders/h2", headers={"X-API-Key": KEY})
    assert status == 200 and json.loads(body)["stored_as"] == "purchase", body
    status, body = request(port, "GET", "/api/customers/new", headers={"X-API-Key": KEY})
    assert status == 200 and json.loads(body)["orders"]["orders"] == 1
    # --json gives the report itself
    again = cli("ingest", "--db", str(db), "--as-of", "2024-03-31", "--json", str(more))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["same_as"] is not None  # the same file: nothing to do
    # the service stops: its note goes, and the store opens again with the file in it
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert not service_note(db).exists()
    shown = cli("status", "--db", str(db), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["orders"] == 4, shown.stdout


def test_without_the_key_the_service_refuses_and_says_so(
    served: tuple[Path, int, subprocess.Popen[str]], tmp_path: Path
) -> None:
    db, port, _ = served
    more = tmp_path / "more.csv"
    more.write_text(MORE)
    refused = cli("ingest", "--db", str(db), "--as-of", "2024-03-31", str(more), key=None)
    assert refused.returncode != 0
    assert "refused the file (401)" in refused.stderr and "RETAIN_API_KEY" in refused.stderr
    missing = cli("ingest", "--db", str(db), str(tmp_path / "absent.csv"))
    assert missing.returncode != 0 and "absent.csv" in missing.stderr
    assert request(port, "GET", "/api/orders/h2", headers={"X-API-Key": KEY})[0] == 404
