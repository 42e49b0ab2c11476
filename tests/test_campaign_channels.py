"""The delivery channels, seen from the receiving end: what a real SMTP server on loopback
and a real HTTP receiver get, one connection for many messages, a dropped connection, SMTP
AUTH, and the file channel's files. Complements ``test_campaign_delivery.py`` (refusals,
retries, URLs) without repeating it."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

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

SENDER = "Shop <shop@example.com>"
SECRET = "s3cret"


def message(key: str = "winback/c42/lapsed:2025-06", **fields: Any) -> Message:
    values: dict[str, Any] = {
        "key": key,
        "campaign": "winback",
        "customer_id": "c42",
        "to": "Zoë Martin <zoe@example.com>",
        "subject": "On vous attend, Zoë",
        "text": "Bonjour Zoë, 10 % sur votre prochaine commande.",
        "html": "<p>Bonjour Zoë</p>",
        "unsubscribe_url": "http://127.0.0.1:8765/unsubscribe?token=abc",
        "data": {"clv": 412.5, "segment": "at risk"},
        **fields,
    }
    return Message(**values)


# -- SMTP -------------------------------------------------------------------------------------
class Keeping:
    """An aiosmtpd handler keeping each envelope, with the client's port (one a connection);
    DATA answers ``data_reply`` when set."""

    def __init__(self, data_reply: str | None = None) -> None:
        self.data_reply = data_reply
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.peers: list[int] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.data_reply:
            return self.data_reply
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.peers.append(session.peer[1])
        return "250 OK"

    def mail(self, index: int) -> EmailMessage:
        parsed = email.message_from_bytes(self.envelopes[index][2], policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def start(handler: Keeping, **server: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **server)
    controller.start()
    return controller, port


@pytest.fixture
def smtp() -> Iterator[tuple[Keeping, int]]:
    handler = Keeping()
    controller, port = start(handler)
    try:
        yield handler, port
    finally:
        controller.stop()


def test_what_the_smtp_server_receives(smtp: tuple[Keeping, int]) -> None:
    handler, port = smtp
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), SENDER)
    try:
        first = channel.send(message())
        again = channel.send(message())  # the same key: the same Message-ID
        receipt = channel.send(
            message("order/c42/o-7", transactional=True, unsubscribe_url=None, html=None)
        )
    finally:
        channel.close()
    assert first == again != receipt
    mail_from, rcpt_tos, _ = handler.envelopes[0]
    assert mail_from == "shop@example.com" and rcpt_tos == ["zoe@example.com"]

    marketing = handler.mail(0)
    assert marketing["From"] == SENDER
    assert marketing["To"] == "Zoë Martin <zoe@example.com>"
    assert marketing["Subject"] == "On vous attend, Zoë"
    assert marketing["Message-ID"] == first and first.endswith("@example.com>")
    assert marketing["X-Retain-Key"] == "winback/c42/lapsed:2025-06"
    assert marketing["Date"] is not None
    assert marketing["List-Unsubscribe"] == "<http://127.0.0.1:8765/unsubscribe?token=abc>"
    assert marketing["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = marketing.get_body(preferencelist=("plain",))
    html = marketing.get_body(preferencelist=("html",))
    assert body is not None and "10 % sur votre prochaine commande" in body.get_content()
    assert html is not None and html.get_content().strip() == "<p>Bonjour Zoë</p>"
    assert handler.mail(1)["Message-ID"] == first

    transactional = handler.mail(2)
    assert transactional["X-Retain-Key"] == "order/c42/o-7"
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None
    assert not transactional.is_multipart()  # no HTML: one text part
    assert transactional.get_content_type() == "text/plain"


def test_many_messages_go_over_one_connection(smtp: tuple[Keeping, int]) -> None:
    handler, port = smtp
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), SENDER)
    try:
        ids = [channel.send(message(f"winback/c{n}/lapsed")) for n in range(5)]
    finally:
        channel.close()
    assert len(set(ids)) == 5 and len(handler.envelopes) == 5
    assert len(set(handler.peers)) == 1  # one client port: one connection


def test_a_connection_the_server_dropped_is_opened_again() -> None:
    handler = Keeping()
    controller, port = start(handler)
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=2"), SENDER)
    try:
        channel.send(message("k1"))
        controller.stop()  # closes the connection the channel keeps
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        channel.send(message("k2"))
    finally:
        channel.close()
        controller.stop()
    assert [handler.mail(i)["X-Retain-Key"] for i in range(2)] == ["k1", "k2"]
    assert handler.peers[0] != handler.peers[1]


def test_a_connection_the_server_timed_out_is_opened_again() -> None:
    handler = Keeping()
    controller, port = start(handler, timeout=0.3)  # the server says 421 and hangs up
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}?timeout=2"), SENDER)
    try:
        channel.send(message("k1"))
        time.sleep(0.6)
        channel.send(message("k2"))
    finally:
        channel.close()
        controller.stop()
    assert len(handler.envelopes) == 2 and handler.peers[0] != handler.peers[1]


@pytest.mark.parametrize(
    ("reply", "permanent"), [("554 message rejected", True), ("452 mailbox full", False)]
)
def test_a_refusal_of_the_message_itself(reply: str, permanent: bool) -> None:
    controller, port = start(Keeping(data_reply=reply))
    channel = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), SENDER)
    try:
        with pytest.raises(DeliveryError) as caught:
            channel.send(message())
    finally:
        channel.close()
        controller.stop()
    assert caught.value.permanent is permanent
    text = str(caught.value)
    assert f"127.0.0.1:{port}" in text and reply in text


def authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer",
        b"p@ss word",
    )
    return AuthResult(success=good, handled=False)  # handled=False: the server answers 535


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_auth_logs_in_and_a_refused_login_does_not_show_the_password() -> None:
    handler = Keeping()
    controller, port = start(
        handler, authenticator=authenticator, auth_require_tls=False, auth_required=True
    )
    try:
        good = SmtpChannel(parse_smtp_url(f"smtp://mailer:p%40ss%20word@127.0.0.1:{port}"), SENDER)
        good.send(message())
        good.close()
        bad = SmtpChannel(parse_smtp_url(f"smtp://mailer:hunter2@127.0.0.1:{port}"), SENDER)
        with pytest.raises(DeliveryError) as caught:
            bad.send(message("k2"))
        bad.close()
        anonymous = SmtpChannel(parse_smtp_url(f"smtp://127.0.0.1:{port}"), SENDER)
        with pytest.raises(DeliveryError) as refused:
            anonymous.send(message("k3"))
        anonymous.close()
    finally:
        controller.stop()
    assert len(handler.envelopes) == 1
    assert caught.value.permanent and "hunter2" not in str(caught.value)
    assert f"127.0.0.1:{port}" in str(caught.value) and "535" in str(caught.value)
    assert "530" in str(refused.value)  # authentication required


def test_a_line_break_in_the_address_is_refused() -> None:
    with pytest.raises(DeliveryError, match="line break") as caught:
        email_message(message(to="zoe@example.com\r\nBcc: all@example.com"), SENDER)
    assert caught.value.permanent


def test_smtp_url_details() -> None:
    plain = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (plain.user, plain.password, plain.starttls, plain.ssl) == (None, None, False, False)
    assert plain.timeout == 10
    assert parse_smtp_url("smtp://mail.example.com").port == 25
    secure = parse_smtp_url("smtps://u%2Bx:pw@mail.example.com:2465?timeout=1.5")
    assert secure.ssl and secure.port == 2465 and secure.user == "u+x" and secure.timeout == 1.5
    for bad, words in [
        ("smtpx://u:hunter2@host:25", "unknown scheme"),
        ("smtp://u:hunter2@:25", "no host"),
        ("smtp://u:hunter2@host:99999", "port"),
        ("smtp://u:hunter2@host:25?timeout=soon", "timeout is not a number"),
    ]:
        with pytest.raises(ArgumentError, match=words) as caught:
            parse_smtp_url(bad)
        assert "hunter2" not in str(caught.value)
        assert "smtp://[user:pass@]host:port" in str(caught.value)  # the expected form


# -- webhook ----------------------------------------------------------------------------------
class Receiver(BaseHTTPRequestHandler):
    """Answers each request with the next queued (status, headers), then 200; keeps them."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        server.seen.append((dict(self.headers), body, time.monotonic()))
        status, headers = server.answers.pop(0) if server.answers else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.seen, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def hook(server: Any) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def test_the_webhook_body_and_its_signature(receiver: Any) -> None:
    sent = message()
    assert WebhookChannel(hook(receiver), SECRET).send(sent) == sent.key
    headers, body, _ = receiver.seen[0]
    assert headers["Content-Type"].startswith("application/json")
    assert "Zoë".encode() in body  # UTF-8 as is
    assert json.loads(body.decode("utf-8")) == {
        "key": sent.key,
        "campaign": "winback",
        "customer_id": "c42",
        "to": "Zoë Martin <zoe@example.com>",
        "subject": "On vous attend, Zoë",
        "text": sent.text,
        "html": "<p>Bonjour Zoë</p>",
        "transactional": False,
        "unsubscribe_url": sent.unsubscribe_url,
        "data": {"clv": 412.5, "segment": "at risk"},
    }
    assert headers["Idempotency-Key"] == sent.key
    stamp = headers["X-Retain-Timestamp"]
    assert re.fullmatch(r"[0-9]{10,}", stamp)  # Unix seconds
    # what a receiver in another language computes: HMAC-SHA256 of "<timestamp>.<body>"
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert headers["X-Retain-Signature"] == "sha256=" + expected.hexdigest()
    assert verify_signature(SECRET, stamp, body, headers["X-Retain-Signature"])
    assert not verify_signature("wrong", stamp, body, headers["X-Retain-Signature"])
    assert not verify_signature(SECRET, str(int(stamp) + 1), body, headers["X-Retain-Signature"])


def test_the_webhook_retries_busy_answers_and_stops_at_a_refusal(receiver: Any) -> None:
    channel = WebhookChannel(hook(receiver), SECRET, backoff=0.01)
    receiver.answers[:] = [(503, {}), (503, {})]
    channel.send(message("k1"))
    assert len(receiver.seen) == 3  # 503, 503, then 200

    receiver.answers[:] = [(429, {"Retry-After": "0"}), (408, {})]
    channel.send(message("k2"))
    assert len(receiver.seen) == 6

    receiver.answers[:] = [(400, {}), (503, {})]
    with pytest.raises(DeliveryError, match="400") as refused:
        channel.send(message("k3"))
    assert refused.value.permanent and len(receiver.seen) == 7  # at once: one request
    assert {h["Idempotency-Key"] for h, _, _ in receiver.seen[3:6]} == {"k2"}


def test_the_webhook_waits_as_long_as_retry_after_says(receiver: Any) -> None:
    receiver.answers[:] = [(429, {"Retry-After": "1"})]
    WebhookChannel(hook(receiver), SECRET, backoff=0.01).send(message())
    (_, _, first), (_, _, second) = receiver.seen
    assert second - first >= 0.9


def test_the_webhook_backs_off_exponentially_then_gives_up() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/", SECRET, retries=3, backoff=0.05)
    began = time.monotonic()
    with pytest.raises(DeliveryError, match="after 4 tries") as caught:
        channel.send(message())
    assert time.monotonic() - began >= 0.05 + 0.1 + 0.2 - 0.02
    assert not caught.value.permanent


# -- files ------------------------------------------------------------------------------------
def test_the_file_channel_keeps_one_eml_and_one_line_a_message(tmp_path: Path) -> None:
    folder = tmp_path / "outbox" / "dry-run"
    channel = FileChannel(folder)
    assert folder.is_dir()
    first = Path(channel.send(message("c/a b/x")))
    second = Path(channel.send(message("c/a/b/x", transactional=True, unsubscribe_url=None)))
    channel.close()
    assert first != second and first.parent == second.parent == folder  # same safe name, two files
    assert {p.name for p in folder.iterdir()} == {first.name, second.name, "messages.jsonl"}

    parsed = email.message_from_bytes(first.read_bytes(), policy=email.policy.default)
    assert parsed["X-Retain-Key"] == "c/a b/x"
    assert "retain@localhost" in parsed["From"]
    assert parsed["Subject"] == "On vous attend, Zoë"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    lines = [json.loads(line) for line in (folder / "messages.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == ["c/a b/x", "c/a/b/x"]
    assert lines[1]["transactional"] is True and lines[1]["file"] == second.name
    assert lines[0]["customer_id"] == "c42" and lines[0]["campaign"] == "winback"
