"""Delivery channels: e-mail over SMTP, a signed webhook, and files for dry runs.

Each channel has ``send(message) -> str`` (the id of the delivery) and ``close()``; a
message that cannot be delivered raises :class:`DeliveryError`, ``permanent`` when
trying again will not help.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import hmac
import json
import os
import re
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.header import Header
from email.message import Message as EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from retain.errors import ArgumentError, RetainError


@dataclass(frozen=True)
class Message:
    """One message to deliver. ``key`` is the outbox key, unique per campaign, customer
    and trigger occurrence: the idempotency key of a webhook, the ``X-Retain-Key`` of an
    e-mail. ``unsubscribe_url`` is None for transactional messages."""

    key: str
    campaign: str
    customer_id: str
    to: str
    subject: str
    text: str
    html: str | None = None
    unsubscribe_url: str | None = None
    transactional: bool = False
    data: dict[str, Any] = field(default_factory=dict)


class DeliveryError(RetainError):
    """A message that could not be delivered. ``permanent``: retrying will not help (a
    refused recipient, a 4xx answer other than 408 and 429); else it may go through later
    (a timeout, a 5xx answer, a refused connection). ``uncertain``: the channel may have
    delivered it all the same (the connection dropped while the server took it), so it is
    not sent again."""

    def __init__(self, message: str, *, permanent: bool, uncertain: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.uncertain = uncertain


class Channel(Protocol):
    kind: str

    def send(self, message: Message) -> str: ...

    def close(self) -> None: ...


# -- e-mail ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the SMTP server."""

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0


SMTP_FORM = "smtp://[user:pass@]host:port[?starttls=1&timeout=10] (or smtps:// for TLS)"


def parse_smtp_url(url: str) -> SmtpSettings:
    """:class:`SmtpSettings` of ``smtp://[user:pass@]host:port[?starttls=1&timeout=10]``
    (``smtps://`` for TLS from the start). A bad URL raises :class:`ArgumentError`; the
    password is never repeated in it."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ArgumentError(f"SMTP URL: the port is not a number; expected {SMTP_FORM}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ArgumentError(f"SMTP URL: unknown scheme {parts.scheme!r}; expected {SMTP_FORM}")
    if not parts.hostname:
        raise ArgumentError(f"SMTP URL: no host; expected {SMTP_FORM}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout"}
    if unknown:
        raise ArgumentError(
            f"SMTP URL: unknown option {sorted(unknown)[0]!r}; expected {SMTP_FORM}"
        )
    try:
        timeout = float(query.get("timeout", 10))
    except ValueError:
        raise ArgumentError(f"SMTP URL: timeout is not a number; expected {SMTP_FORM}") from None
    secure = parts.scheme == "smtps"
    return SmtpSettings(
        host=parts.hostname,
        port=port or (465 if secure else 25),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        starttls=query.get("starttls", "0").lower() in ("1", "true", "yes"),
        ssl=secure,
        timeout=timeout,
    )


def _one_line(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise DeliveryError(f"{what} holds a line break: refused", permanent=True)
    return value


def _header(value: str) -> Any:
    """A header value as it goes on the wire: plain ASCII as is, else RFC 2047 words."""
    return value if value.isascii() else Header(value, "utf-8")


def _address(value: str) -> str:
    """An address with its display name, the name encoded when it is not ASCII."""
    name, address = email.utils.parseaddr(value)
    if not address:
        return value
    return email.utils.formataddr((name, address), charset="utf-8")


def email_message(message: Message, sender: str) -> EmailMessage:
    """The e-mail of ``message``: text and, when given, HTML; a Message-ID fixed by the
    key; for marketing, ``List-Unsubscribe`` and one-click ``List-Unsubscribe-Post``.
    Built with the standard library's classic (compat32) classes, which write a message
    ten times faster than the modern policy's header folding."""
    text = MIMEText(message.text, "plain", "utf-8")
    mail: EmailMessage
    if message.html:
        mail = MIMEMultipart("alternative")
        mail.attach(text)
        mail.attach(MIMEText(message.html, "html", "utf-8"))
    else:
        mail = text
    mail["From"] = _address(_one_line(sender, "the sender"))
    mail["To"] = _address(_one_line(message.to, "the address"))
    mail["Subject"] = _header(_one_line(message.subject, "the subject"))
    mail["Date"] = email.utils.formatdate(localtime=False)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    digest = hashlib.sha256(message.key.encode()).hexdigest()[:32]
    mail["Message-ID"] = f"<{digest}@{domain}>"
    mail["X-Retain-Key"] = _header(_one_line(message.key, "the key"))
    if message.unsubscribe_url and not message.transactional:
        mail["List-Unsubscribe"] = f"<{_one_line(message.unsubscribe_url, 'the link')}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return mail


class SmtpChannel:
    """E-mail over one SMTP connection, opened on the first send and kept."""

    kind = "email"

    def __init__(self, settings: SmtpSettings, sender: str) -> None:
        self.settings = settings
        self.sender = sender
        self._smtp: smtplib.SMTP | None = None

    @property
    def server(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    smtp.starttls(context=ssl.create_default_context())
            if s.user:
                smtp.login(s.user, s.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"the SMTP server {self.server} refused the login of {s.user!r}: "
                f"{exc.smtp_code} {_reply(exc.smtp_error)}",
                permanent=True,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot reach the SMTP server {self.server}: {exc}", permanent=False
            ) from None
        return smtp

    def send(self, message: Message) -> str:
        mail = email_message(message, self.sender)
        sender = email.utils.parseaddr(self.sender)[1]
        recipient = email.utils.parseaddr(str(mail["To"]))[1]
        for attempt in (0, 1):
            if self._smtp is None:
                self._smtp = self._connect()
            smtp = self._smtp
            try:  # the envelope: a server that dropped the kept connection is asked again
                smtp.ehlo_or_helo_if_needed()
                code, reply = smtp.mail(sender)
                if code != 250:
                    self._reset()
                    raise smtplib.SMTPSenderRefused(code, reply, sender)
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    self._reset()
                    raise DeliveryError(
                        f"the SMTP server {self.server} refused {message.to}: {code} "
                        f"{_reply(reply)}",
                        permanent=code >= 500,
                    )
            except smtplib.SMTPServerDisconnected:
                self._smtp = None
                if attempt:
                    raise DeliveryError(
                        f"the SMTP server {self.server} closed the connection", permanent=False
                    ) from None
                continue
            except smtplib.SMTPResponseException as exc:
                raise DeliveryError(
                    f"the SMTP server {self.server} answered {exc.smtp_code} "
                    f"{_reply(exc.smtp_error)}",
                    permanent=exc.smtp_code >= 500,
                ) from None
            except OSError as exc:
                self._smtp = None
                raise DeliveryError(
                    f"sending to the SMTP server {self.server} failed: {exc}", permanent=False
                ) from None
            break
        assert self._smtp is not None
        try:  # the message: from here a drop leaves unknown whether it was delivered
            code, reply = self._smtp.data(mail.as_bytes())
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except smtplib.SMTPResponseException as exc:
            self._reset()
            raise DeliveryError(
                f"the SMTP server {self.server} answered {exc.smtp_code} {_reply(exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._smtp = None
            raise DeliveryError(
                f"the SMTP server {self.server} was lost while taking the message ({exc}): "
                "it may have been delivered",
                permanent=False,
                uncertain=True,
            ) from None
        return str(mail["Message-ID"])

    def _reset(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (OSError, smtplib.SMTPException):
                self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None


def _reply(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# -- webhook -----------------------------------------------------------------------------------
def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the HMAC-SHA256 of ``f"{timestamp}.".encode() + body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, given: str) -> bool:
    """Whether ``given`` (the ``X-Retain-Signature`` header) signs ``body`` at ``timestamp``
    (the ``X-Retain-Timestamp`` header) with ``secret``: what a receiver checks."""
    return hmac.compare_digest(signature(secret, timestamp, body), given)


def header_key(key: str) -> str:
    """``key`` as an HTTP header can carry it: as it is when ASCII, else percent-encoded
    (a feedback id in Cyrillic or Thai)."""
    from urllib.parse import quote

    return key if key.isascii() else quote(key, safe="/:@._-~ ")


class WebhookChannel:
    """An HTTP POST of each message as JSON, for SMS gateways and other tools.

    Headers: ``Idempotency-Key`` (the outbox key, percent-encoded when not ASCII: a
    receiver drops a key it has seen),
    ``X-Retain-Timestamp`` (Unix seconds) and ``X-Retain-Signature``: ``sha256=`` and the
    hex HMAC-SHA256, keyed with the shared secret, of the timestamp, a dot and the body's
    bytes (:func:`verify_signature`). Connection errors, timeouts, 408, 429 (after its
    ``Retry-After``, up to 30 s) and 5xx are retried ``retries`` times, ``backoff`` x 2^n
    seconds apart; another 4xx is final at once.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ArgumentError(f"webhook_url: got {url!r}, expected an http:// or https:// URL")
        self.url = url
        self.secret = secret
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def send(self, message: Message) -> str:
        body = json.dumps(
            {
                "key": message.key,
                "campaign": message.campaign,
                "customer_id": message.customer_id,
                "to": message.to,
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
                "transactional": message.transactional,
                "unsubscribe_url": message.unsubscribe_url,
                "data": message.data,
            },
            ensure_ascii=False,
            default=str,
        ).encode()
        problem = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            stamp = str(int(time.time()))
            request = urllib.request.Request(
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Idempotency-Key": header_key(message.key),
                    "X-Retain-Timestamp": stamp,
                    "X-Retain-Signature": signature(self.secret, stamp, body),
                    "User-Agent": "retain-campaigns",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    answer.read()
                    return message.key
            except urllib.error.HTTPError as exc:
                problem = f"the webhook {self.url} answered {exc.code} {exc.reason}"
                if exc.code not in (408, 429) and exc.code < 500:
                    raise DeliveryError(problem, permanent=True) from None
                after = exc.headers.get("Retry-After") if exc.headers else None
                if exc.code == 429 and after and after.strip().isdigit():
                    wait = min(float(after), 30.0)
            except (TimeoutError, urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                problem = f"cannot reach the webhook {self.url}: {reason}"
            if attempt < self.retries:
                time.sleep(wait)
        raise DeliveryError(f"{problem} (after {self.retries + 1} tries)", permanent=False)

    def close(self) -> None:
        pass


# -- files -------------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FileChannel:
    """Each message as an ``.eml`` file and a line of ``messages.jsonl`` in ``folder``:
    for dry runs and audits."""

    kind = "file"

    def __init__(self, folder: str | Path, sender: str = "retain <retain@localhost>") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sender = sender

    def path_of(self, key: str) -> Path:
        name = _UNSAFE.sub("_", key)[:150] + "-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        return self.folder / f"{name}.eml"

    def send(self, message: Message) -> str:
        target = self.path_of(message.key)
        mail = email_message(message, self.sender)
        temporary = target.with_suffix(".part")
        try:
            temporary.write_bytes(mail.as_bytes())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        line = {
            "key": message.key,
            "campaign": message.campaign,
            "customer_id": message.customer_id,
            "to": message.to,
            "subject": message.subject,
            "transactional": message.transactional,
            "file": target.name,
        }
        with (self.folder / "messages.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        return str(target)

    def close(self) -> None:
        pass
