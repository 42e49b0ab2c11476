"""Handing a file to the running service: ``retain ingest`` while ``retain serve`` holds
the store.

DuckDB lets one process write a store's file. While the service runs it keeps a note
beside the store (``STORE.service.json``: its address and process id, see
:func:`announce`); ``retain ingest`` that finds the store locked reads the note and
sends the file's path and options to the service's ``POST /api/ingest``
(:func:`ingest_through`), which ingests it with the service's own connection, under its
write lock, and answers the same report. The file is read where it lies: the service
runs on this machine. The API key, when the service has one, is the client's
``RETAIN_API_KEY`` (or ``RETAIN_API_KEY_FILE``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from retain.errors import StoreLocked

#: how long ``retain ingest`` waits for the service to ingest a file, seconds
INGEST_TIMEOUT_S = 3600.0


def service_note(db_path: str | Path) -> Path:
    """Where the service running on ``db_path`` leaves its address."""
    return Path(f"{Path(db_path).expanduser().resolve()}.service.json")


@contextlib.contextmanager
def announce(db_path: str | Path, host: str, port: int) -> Iterator[None]:
    """Keep the note of a service listening on ``host``:``port`` while the block runs."""
    note = service_note(db_path)
    reach = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{reach}]" if ":" in reach else reach
    note.write_text(json.dumps({"url": f"http://{shown}:{port}", "pid": os.getpid()}))

    def stop(signum: int, frame: FrameType | None) -> None:
        # uvicorn stops gracefully on SIGTERM, then raises it again with the handler it
        # found: this one, so that the note goes before the process ends (128 + 15)
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(note.read_text()).get("pid") == os.getpid():
                note.unlink()


def running_service(db_path: str | Path) -> str | None:
    """The address of the service running on ``db_path``, or None (no note, or its
    process is gone)."""
    note = service_note(db_path)
    try:
        found = json.loads(note.read_text())
        pid, url = int(found["pid"]), str(found["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's process: it exists
        pass
    return url


def ingest_through(url: str, path: Path, options: dict[str, Any], db_path: str | Path) -> Any:
    """Ask the service at ``url`` to ingest ``path`` with ``options``; its
    :class:`~retain.ingest.load.IngestReport`. Raises :class:`StoreLocked` saying why
    when the service cannot be asked or refuses."""
    from retain.ingest.load import IngestReport
    from retain.service.app import resolve_api_key

    body = json.dumps({"path": str(path.expanduser().resolve()), **options}).encode()
    headers = {"Content-Type": "application/json"}
    key = resolve_api_key()
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(f"{url}/api/ingest", data=body, headers=headers)
    where = f"the store {db_path} is held by the running `retain serve` at {url}"
    try:
        with urllib.request.urlopen(request, timeout=INGEST_TIMEOUT_S) as answer:
            found = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 401:
            detail += "; set RETAIN_API_KEY to the service's key"
        raise StoreLocked(f"{where}, which refused the file ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StoreLocked(
            f"{where}, which did not answer ({exc}); stop it to ingest, or try again"
        ) from None
    return IngestReport(**found)


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        said = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        said = None
    if isinstance(said, list):
        said = "; ".join(str(s) for s in said)
    return str(said or exc.reason)
