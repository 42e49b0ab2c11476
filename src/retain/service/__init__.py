"""The service: a REST API, a web dashboard and a shareable report over a retain store.

::

    retain serve --db retain.duckdb            # http://127.0.0.1:8765
    retain report --db retain.duckdb --out report.html

    from retain.service import create_app, write_report
    app = create_app("retain.duckdb", api_key="...")   # an ASGI app for any server
    write_report("retain.duckdb", "report.html")

Every dashboard page has a JSON twin under ``/api`` rendered from the same
dict (:mod:`retain.service.data`); the OpenAPI schema is at ``/openapi.json``
and browsable at ``/docs``.
"""

from retain.service.app import ServiceError, check_bind, create_app, resolve_api_key
from retain.service.report import report_html, write_report
from retain.service.serve import serve

__all__ = [
    "ServiceError",
    "check_bind",
    "create_app",
    "report_html",
    "resolve_api_key",
    "serve",
    "write_report",
]
