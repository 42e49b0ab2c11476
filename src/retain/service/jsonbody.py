"""Request bodies read as strict JSON (RFC 8259): UTF-8, each name once in an object, no
NaN or Infinity, no lone surrogates. A body that breaks one of these is answered 422 with
the field named (``lines.0.unit_price: ...``), before any route looks at it; a body that
is not sent as JSON at all is answered 415.

Python's own reader takes all of these quietly (the last of two ``customer_id`` wins, NaN
becomes a float, UTF-16 is decoded), so what a client meant and what the service stores
could differ; a lone surrogate would even fail later, deep in the store.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _Object(dict[str, Any]):
    """A JSON object as read, with the names it gave more than once."""

    repeated: list[str]


class _NotJSON:
    """Where the body had NaN, Infinity or -Infinity (which JSON does not have)."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    found = _Object()
    found.repeated = []
    for name, value in pairs:
        if name in found and name not in found.repeated:
            found.repeated.append(name)
        found[name] = value
    return found


def _refuse(problems: list[str]) -> HTTPException:
    return HTTPException(422, problems)


def _lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` as ``\\udXXX``, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def strict_json(body: bytes) -> Any:
    """``body`` read as JSON by RFC 8259's rules; raises HTTPException 422 with a list of
    problems (each naming its field) when it breaks one."""
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark: allowed, and ignored
        body = body[3:]
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body[:4]:
        raise _refuse(["the body is UTF-16 or UTF-32: send JSON as UTF-8 (RFC 8259)"])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(
            [f"the body is not UTF-8 at byte {exc.start + 1:,}: send JSON as UTF-8 (RFC 8259)"]
        ) from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_NotJSON)
    except json.JSONDecodeError as exc:
        raise _refuse(
            [f"the body is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
        ) from None
    except RecursionError:
        raise _refuse(["the body nests arrays or objects too deep to read"]) from None
    except ValueError as exc:  # an integer of more digits than Python reads
        raise _refuse([f"the body is not JSON this service reads: {exc}"]) from None
    problems: list[str] = []
    # depth first without recursion: the reader already took any nesting depth it could
    stack: list[tuple[str, Any]] = [("", value)]
    while stack and len(problems) < 20:
        where, item = stack.pop()
        named = f"{where}: " if where else ""
        if isinstance(item, _NotJSON):
            problems.append(
                f"{named}{item.literal} is not a JSON number (JSON has no NaN or Infinity)"
            )
        elif isinstance(item, str):
            surrogate = _lone_surrogate(item)
            if surrogate:
                problems.append(
                    f"{named}holds {surrogate}, half of a UTF-16 surrogate pair: no character"
                )
        elif isinstance(item, _Object):
            for name in item.repeated:
                field = f"{where}.{name}" if where else name
                problems.append(f"{field}: given more than once in the same object; give it once")
            for name, inner in reversed(item.items()):
                field = f"{where}.{name}" if where else name
                surrogate = _lone_surrogate(name)
                if surrogate:
                    problems.append(f"{where or 'the body'}: a field name holds {surrogate}")
                    continue
                stack.append((field, inner))
        elif isinstance(item, list):
            for i in reversed(range(len(item))):
                stack.append((f"{where}.{i}" if where else str(i), item[i]))
    if problems:
        raise _refuse(problems)
    return value


class _StrictBody(Request):
    """A request whose ``json()`` is :func:`strict_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value is JSON's (``application/json`` or ``...+json``)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class StrictJSONRoute(APIRoute):
    """A route whose request body, when it has one, must be strict JSON (:func:`strict_json`)
    sent as ``Content-Type: application/json`` (else 415)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            request = _StrictBody(request.scope, request.receive)
            if self.body_field is not None and request.method in UNSAFE_METHODS:
                if not await request.body():
                    raise HTTPException(
                        422,
                        ["the body is empty: send a JSON object (Content-Type: application/json)"],
                    )
                given = request.headers.get("content-type")
                if not is_json_type(given):
                    raise HTTPException(
                        415,
                        f"the body is sent as {given or 'no Content-Type'}; send it as JSON "
                        "with 'Content-Type: application/json'",
                    )
            return await handler(request)

        return strict
