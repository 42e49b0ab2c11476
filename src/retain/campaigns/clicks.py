"""Tracked links: each link of a message points at ``retain serve``'s ``/click``, which
records the click and sends the customer on to the link's own address.

A tracked link carries a signed token naming the message (its outbox key) and the
address; the service answers only tokens the store signed, so it cannot be made to send
anyone elsewhere (no open redirect). The unsubscribe link is never rewritten.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from typing import Any

from retain.errors import DataError
from retain.store import Store

_TEXT_LINK = re.compile(r"https?://[^\s<>\"')\]]+")
_HTML_LINK = re.compile(r"""(href\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
TOKEN_CHARS = 4000
"""The longest token the service reads (a link of about 2,900 characters)."""


def click_token(secret: bytes, key: str, url: str) -> str:
    """The signed token of the link ``url`` in the message ``key``."""
    body = f"{key}\x1f{url}".encode()
    mac = hmac.new(secret, b"click\x1f" + body, hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(body).decode().rstrip("=") + "." + mac


def read_click_token(secret: bytes | None, token: str) -> tuple[str, str]:
    """The message key and address a token this store signed names; else
    :class:`DataError`."""
    try:
        encoded, mac = token.split(".", 1)
        body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        key, url = body.decode().split("\x1f", 1)
    except (ValueError, UnicodeDecodeError):
        raise DataError("not a link of a message", expected="a link from a message") from None
    good = secret is not None and hmac.compare_digest(
        hmac.new(secret, b"click\x1f" + body, hashlib.sha256).hexdigest()[:32], mac
    )
    if not good or not url.startswith(("http://", "https://")):
        raise DataError("this link was not signed by this store")
    return key, url


def track_links(
    rendered: dict[str, Any], key: str, secret: bytes | None, base: str | None
) -> dict[str, Any]:
    """The rendered ``body_text`` and ``body_html`` with each http(s) link but the
    unsubscribe link (and those already tracked) pointing at ``base`` with its token.
    Without ``base`` (tracking off) or ``secret`` (a dry run) the bodies as they are."""
    if not base or secret is None:
        return rendered
    keep = {rendered.get("unsubscribe_url"), None}

    def wrap(url: str) -> str:
        if url in keep or url.startswith(base):
            return url
        return f"{base}?t={click_token(secret, key, url)}"

    out = dict(rendered)
    if out.get("body_text"):
        out["body_text"] = _TEXT_LINK.sub(lambda m: wrap(m.group(0)), out["body_text"])
    if out.get("body_html"):
        out["body_html"] = _HTML_LINK.sub(
            lambda m: f"{m.group(1)}{m.group(2)}{wrap(_unescape(m.group(3)))}{m.group(2)}",
            out["body_html"],
        )
    return out


def _unescape(url: str) -> str:
    return url.replace("&amp;", "&")


def record_click(store: Store, token: str, *, now: dt.datetime | None = None) -> str:
    """Record a click on a tracked link (every click; the report counts clickers) and
    return the address to send the customer on to."""
    from retain.campaigns.outbox import _secret

    key, url = read_click_token(_secret(store, create=False), token)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    with store.transaction() as con:
        found = con.execute(
            "SELECT campaign, customer_id FROM campaign_outbox WHERE key = ?", [key]
        ).fetchall()
        if found:  # a message deleted since (a store reset) still leads on
            campaign, customer = found[0]
            con.execute(
                "INSERT INTO campaign_clicks VALUES (?, ?, ?, ?, ?)",
                [key, campaign, customer, url, when],
            )
    return url


def target(store: Store, token: str) -> str:
    """The address a token leads to, recording nothing (a read-only service)."""
    from retain.campaigns.outbox import _secret

    return read_click_token(_secret(store, create=False), token)[1]
