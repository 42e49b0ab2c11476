"""Run the service with uvicorn, after checking that it is safe to listen where asked."""

from __future__ import annotations

from pathlib import Path

from retain.service.app import check_bind, create_app, is_loopback, resolve_api_key


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
    other than loopback with write endpoints enabled and no API key. Beyond
    loopback with a key, reads need the key too (see :func:`create_app`).
    """
    import sys

    import uvicorn

    key = resolve_api_key(api_key, key_file)
    check_bind(host, key, writes)
    app = create_app(db_path, key, writes=writes, host=host)
    shown = f"[{host}]" if ":" in host else host
    writes_note = (
        "read-only" if not writes else ("API key set" if key else "writes from this machine")
    )
    if key and not is_loopback(host):
        writes_note += "; reads need the key too: open the dashboard once as /?key=KEY"
    elif not is_loopback(host):
        writes_note += (
            "; WARNING: no API key, so anyone who can reach this address reads every "
            "customer's e-mail and name: set RETAIN_API_KEY or --api-key-file"
        )
    print(
        f"retain: dashboard on http://{shown}:{port}/ , API docs at /docs ({writes_note}); "
        "Ctrl+C to stop",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
