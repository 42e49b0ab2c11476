"""Run the service with uvicorn, after checking that it is safe to listen where asked."""

from __future__ import annotations

from pathlib import Path

from retain.service.app import check_bind, create_app, resolve_api_key


def serve(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    key_file: str | Path | None = None,
    writes: bool = True,
    log_level: str = "warning",
) -> None:
    """Serve the dashboard and API over the store at ``db_path`` until interrupted.

    Refuses (:class:`~retain.service.ServiceError`) to listen on an address
    other than loopback with write endpoints enabled and no API key.
    """
    import sys

    import uvicorn

    key = resolve_api_key(api_key, key_file)
    check_bind(host, key, writes)
    app = create_app(db_path, key, writes=writes)
    shown = f"[{host}]" if ":" in host else host
    writes_note = (
        "read-only" if not writes else ("API key set" if key else "writes from this machine")
    )
    print(
        f"retain: dashboard on http://{shown}:{port}/ , API docs at /docs ({writes_note}); "
        "Ctrl+C to stop",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
