"""Run the service with uvicorn, after checking that it is safe to listen where asked."""

from __future__ import annotations

import contextlib
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from retain.service.app import (
    MAX_BODY_BYTES,
    ServiceError,
    check_bind,
    create_app,
    is_loopback,
    resolve_api_key,
)

STARTUP_FAILURE = 3
"""The exit code when the service cannot start listening (uvicorn's own for a failed start)."""

SHUTDOWN_GRACE_S = 5
"""Seconds the server waits, once told to stop (Ctrl+C, SIGTERM), for the requests under
way to be answered before it drops them and closes the store: long enough for the orders
queued to be written and answered (the writer admits about a second of work), short enough
that a client that never finishes sending its request cannot hold the server open."""


class PortInUse(ServiceError):
    """Another program already listens on the port asked for."""


def check_port(host: str, port: int) -> None:
    """Bind ``port`` at every address ``host`` stands for, then let go, as the server is
    about to bind it. Raises :class:`PortInUse` when the port is taken there,
    :class:`ServiceError` when the address cannot be used at all.
    """
    import errno

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServiceError(f"cannot listen on {host}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in found:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and len(found) > 1:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(
                        f"port {port} on {host} is in use by another program: stop it, or "
                        "choose another port with --port"
                    ) from None
                raise ServiceError(f"cannot listen on {host} port {port}: {exc.strerror}") from None
    finally:
        for sock in sockets:
            sock.close()


def serve(
    db_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    key_file: str | Path | None = None,
    writes: bool = True,
    log_level: str = "warning",
    max_body_bytes: int = MAX_BODY_BYTES,
    campaigns: str | Path | None = None,
    feedback_routes: str | Path | None = None,
) -> None:
    """Serve the dashboard and API over the store at ``db_path`` until interrupted.

    Refuses (:class:`~retain.service.ServiceError`) to listen on an address
    other than loopback with write endpoints enabled and no API key. Beyond
    loopback with a key, reads need the key too (see :func:`create_app`). When the port is
    taken, says so on stderr and exits with code 3 (:data:`STARTUP_FAILURE`) before
    opening the store. ``max_body_bytes``: the largest request body taken (413 beyond).
    ``campaigns``: a campaign file run every minute inside the service;
    ``feedback_routes``: a routes file whose new complaints are sent every minute.
    Told to stop, it answers the requests under way for up to :data:`SHUTDOWN_GRACE_S`
    seconds, then drops the rest and closes the store.
    """

    key = resolve_api_key(api_key, key_file)
    check_bind(host, key, writes)
    try:
        check_port(host, port)
    except PortInUse as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None
    app = create_app(
        db_path,
        key,
        writes=writes,
        host=host,
        max_body_bytes=max_body_bytes,
        campaigns=campaigns,
        feedback_routes=feedback_routes,
    )
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
    if campaigns is not None:
        writes_note += f"; campaigns of {campaigns} run every minute"
    print(
        f"retain: dashboard on http://{shown}:{port}/ , API docs at /docs ({writes_note}); "
        "Ctrl+C to stop",
        file=sys.stderr,
        flush=True,
    )
    from retain.service.handoff import announce

    # the note `retain ingest` reads to hand its file to this service (writes only)
    noted = announce(db_path, host, port) if writes else contextlib.nullcontext()
    with noted:
        run_uvicorn(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )


def run_uvicorn(app: Any, **options: Any) -> None:
    """``uvicorn.run(app, **options)``, on a server that a second Ctrl+C does not cut
    short (see :func:`_patient_server`); exits with :data:`STARTUP_FAILURE` when it
    cannot start."""
    import uvicorn

    server = _patient_server()(uvicorn.Config(app, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def _patient_server() -> type:
    """uvicorn's Server, but a second Ctrl+C while it stops does not cut the stop short."""
    import uvicorn

    class PatientServer(uvicorn.Server):
        """uvicorn's server, told to stop once: a second Ctrl+C (uvicorn's "force quit")
        would drop the requests under way unanswered (uvicorn answers them 500, orders
        included, stored or not) and skip closing the store. The stop takes at most
        :data:`SHUTDOWN_GRACE_S` seconds anyway."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:  # already stopping
                return
            super().handle_exit(sig, frame)

    return PatientServer
