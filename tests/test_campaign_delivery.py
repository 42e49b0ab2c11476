"""The delivery channels against real servers: a webhook receiver and SMTP servers on
loopback that accept, refuse or are not there; the file channel; SMTP URLs."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from retain.campaigns.channels import (
    DeliveryError,
    FileChannel,
    Message,
    SmtpChannel,
    WebhookChannel,
    email_message,
    parse_smtp_url,
    verify_signature,
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


class Receiver(BaseHTTPRequestHandler):
    """Answers with the statuses queued on the server, then 200; keeps every request."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        server.seen.append((dict(self.headers), body))  # type: ignore[attr-defined]
        status = server.answers.pop(0) if server.answers else 200  # type: ignore[attr-defined]
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.seen = []  # type: ignore[attr-defined]
    server.answers = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def test_webhook_posts_signed_json_with_the_idempotency_key(receiver: ThreadingHTTPServer) -> None:
    channel = WebhookChannel(url_of(receiver), SECRET, backoff=0.01)
    assert channel.send(message()) == "c/a/birthday:2025"
    headers, body = receiver.seen[0]  # type: ignore[attr-defined]
    sent = json.loads(body)
    assert sent["key"] == "c/a/birthday:2025" and sent["subject"] == "Joyeux anniversaire, Zoë"
    assert headers["Idempotency-Key"] == "c/a/birthday:2025"
    stamp, signature = headers["X-Retain-Timestamp"], headers["X-Retain-Signature"]
    assert verify_signature(SECRET, stamp, body, signature)
    assert not verify_signature("other", stamp, body, signature)
    assert not verify_signature(SECRET, stamp, body + b" ", signature)


def test_webhook_retries_what_may_pass_and_stops_at_a_refusal(
    receiver: ThreadingHTTPServer,
) -> None:
    channel = WebhookChannel(url_of(receiver), SECRET, backoff=0.01)
    receiver.answers[:] = [503, 429, 500]  # type: ignore[attr-defined]
    channel.send(message())
    assert len(receiver.seen) == 4  # type: ignore[attr-defined]
    keys = {h["Idempotency-Key"] for h, _ in receiver.seen}  # type: ignore[attr-defined]
    assert keys == {"c/a/birthday:2025"}
    receiver.answers[:] = [400]  # type: ignore[attr-defined]
    with pytest.raises(DeliveryError, match="answered 400") as refused:
        channel.send(message("k2"))
    assert refused.value.permanent and len(receiver.seen) == 5  # type: ignore[attr-defined]
    receiver.answers[:] = [503] * 10  # type: ignore[attr-defined]
    with pytest.raises(DeliveryError, match="after 4 tries") as busy:
        channel.send(message("k3"))
    assert not busy.value.permanent


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


def test_file_channel_writes_an_eml_and_a_json_line(tmp_path: Path) -> None:
    channel = FileChannel(tmp_path / "out")
    path = Path(channel.send(message(key="c/a b/order:1/2")))
    assert path.exists() and path.parent == tmp_path / "out" and "/" not in path.name[:-4]
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed["X-Retain-Key"] == "c/a b/order:1/2"
    lines = (tmp_path / "out" / "messages.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["file"] == path.name
    assert not list((tmp_path / "out").glob("*.part"))


def test_smtp_urls() -> None:
    settings = parse_smtp_url("smtp://mailer:p%40ss@mail.example.com:587?starttls=1&timeout=5")
    assert (settings.host, settings.port, settings.user, settings.password) == (
        "mail.example.com",
        587,
        "mailer",
        "p@ss",
    )
    assert settings.starttls and not settings.ssl and settings.timeout == 5
    assert parse_smtp_url("smtps://mail.example.com").port == 465
    assert "p@ss" not in repr(settings)
    for bad, words in [
        ("http://mail.example.com", "unknown scheme"),
        ("smtp://:25", "no host"),
        ("smtp://user:hunter2@host:port", "port is not a number"),
        ("smtp://host:25?tls=1", "unknown option"),
    ]:
        with pytest.raises(ArgumentError, match=words) as caught:
            parse_smtp_url(bad)
        assert "hunter2" not in str(caught.value)
