"""The delivery channels where nothing answers, and SMTP servers on loopback that refuse a
recipient; the headers of marketing and transactional mail. (test_campaign_channels.py
has what arrives at the servers, connections, AUTH, webhook retries, files, SMTP URLs.)"""

from __future__ import annotations

import email
import email.policy

import pytest
from aiosmtpd.controller import Controller

from retain.campaigns.channels import (
    DeliveryError,
    Message,
    SmtpChannel,
    WebhookChannel,
    email_message,
    parse_smtp_url,
)
from retain.errors import ArgumentError
from store_helpers import free_port

SECRET = "s3cret"


def message(key: str = "c/a/birthday:2025", **fields: object) -> Message:
    values: dict = {
        "key": key,
        "campaign": "c",
        "customer_id": "a",
        "to": "a@example.com",
        "subject": "Joyeux anniversaire, Zoë",
        "text": "Bonjour Zoë",
        "html": "<p>Bonjour Zoë</p>",
        "unsubscribe_url": "http://127.0.0.1:8765/unsubscribe?token=abc",
        **fields,
    }
    return Message(**values)


def test_webhook_with_nothing_listening_may_pass_later() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET, retries=1, backoff=0.01)
    with pytest.raises(DeliveryError, match="cannot reach the webhook") as caught:
        channel.send(message())
    assert not caught.value.permanent
    with pytest.raises(ArgumentError, match="http:// or https://"):
        WebhookChannel("ftp://example.com/", SECRET)


class Refusing:
    """An SMTP handler answering RCPT with ``code`` for addresses starting with "no"."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.received: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        if address.startswith("no"):
            return self.code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.received.append(envelope.content)
        return "250 OK"


@pytest.mark.parametrize(
    ("code", "permanent"), [("550 mailbox unavailable", True), ("451 try later", False)]
)
def test_smtp_refusals_say_whether_to_try_again(code: str, permanent: bool) -> None:
    handler = Refusing(code)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), "Shop <shop@example.com>")
        with pytest.raises(DeliveryError) as caught:
            channel.send(message(to="nobody@example.com"))
        assert caught.value.permanent is permanent
        assert f"127.0.0.1:{port}" in str(caught.value) and code.split()[0] in str(caught.value)
        # the connection stays usable for the next message
        first = channel.send(message("k1"))
        second = channel.send(message("k2"))
        channel.close()
    finally:
        controller.stop()
    assert first != second and len(handler.received) == 2
    parsed = email.message_from_bytes(handler.received[0], policy=email.policy.default)
    assert parsed["Subject"] == "Joyeux anniversaire, Zoë"
    assert parsed["Message-ID"] == first
    parts = {p.get_content_type(): p.get_content() for p in parsed.walk() if not p.is_multipart()}
    assert parts["text/plain"].strip() == "Bonjour Zoë"
    assert parts["text/html"].strip() == "<p>Bonjour Zoë</p>"


def test_smtp_with_nothing_listening_may_pass_later() -> None:
    port = free_port()
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=2"), "a@b.example")
    with pytest.raises(
        DeliveryError, match=f"cannot reach the SMTP server 127.0.0.1:{port}"
    ) as caught:
        channel.send(message())
    assert not caught.value.permanent


def test_email_headers_marketing_and_transactional() -> None:
    marketing = email_message(message(), "Shop <shop@example.com>")
    again = email_message(message(), "Shop <shop@example.com>")
    receipt = email_message(message(transactional=True), "Shop <shop@example.com>")
    assert marketing["Message-ID"] == again["Message-ID"]  # fixed by the key
    assert marketing["Message-ID"].endswith("@example.com>")
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "unsubscribe?token=abc" in str(marketing["List-Unsubscribe"])
    assert receipt["List-Unsubscribe"] is None and receipt["List-Unsubscribe-Post"] is None
    with pytest.raises(DeliveryError, match="line break") as caught:
        email_message(message(subject="Hi\r\nBcc: everyone@example.com"), "a@b.example")
    assert caught.value.permanent


def test_an_smtp_server_that_never_answers_times_out() -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never says a word
    port = silent.getsockname()[1]
    try:
        channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=0.5"), "a@b.example")
        with pytest.raises(DeliveryError, match=f"127.0.0.1:{port}") as caught:
            channel.send(message())
    finally:
        silent.close()
    assert not caught.value.permanent
