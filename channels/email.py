"""The email channel: AWS SES v2 (raw MIME through `send_email`) and plain SMTP.

Both backends send the same MIME message, built by `build_mime`: multipart/alternative with
a UTF-8 text/plain part and (when the message has HTML) a UTF-8 text/html part, an RFC 2047
encoded Subject, a Message-ID that stays the same on every retry of a delivery, and the
RFC 8058 one-click List-Unsubscribe headers when the message carries an unsubscribe URL.

SES gets the message as `Content.Raw` (the Simple content form loses custom headers in moto
and cannot carry both parts there; see docs/providers.md). SMTP keeps one connection per worker
thread and reuses it across messages.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from functools import cache
from typing import Any, ClassVar, NamedTuple

from channels.aws import AwsSettings, aws_client
from channels.base import (
    Channel,
    DeliveryResult,
    Message,
    NotifierError,
    PermanentChannelError,
    TransientChannelError,
)
from config.settings import Variable

log = logging.getLogger(__name__)

DEFAULT_FROM = "notifications@kyo.app"
DAILY_QUOTA_RETRY_AFTER = 600.0
SUBJECT_MAX = 250
"""Characters of a Subject (mail clients show far fewer; RFC 5322 lines stop at 998)."""
"""SES: on "Daily message quota exceeded" wait (at least) 10 minutes before trying again."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


# --------------------------------------------------------------------------- the message


class OutgoingEmail(NamedTuple):
    """What both backends send: envelope sender/recipient, the raw MIME bytes, Message-ID."""

    sender: str
    """The From header value (may carry a display name)."""
    envelope_from: str
    """The bare address of the sender (SMTP MAIL FROM)."""
    recipient: str
    message_id: str
    raw: bytes


def sender_address() -> str:
    return os.environ.get("NOTIFIER_EMAIL_FROM", "").strip() or DEFAULT_FROM


_SECTION = "Channel: email"


class EmailChannel(Channel):
    """The email channel: what both backends (and the outbox) share."""

    name = "email"
    template_parts = ("subject", "txt", "html")
    tracks_links = True
    unsubscribe_link = True  # RFC 8058 List-Unsubscribe headers
    outbox_view = "email"
    outbox_color = "#2563eb"
    variables = (
        Variable(
            "NOTIFIER_EMAIL_FROM",
            "text",
            DEFAULT_FROM,
            "Sender address of every email.",
            _SECTION,
        ),
        Variable(
            "SMTP_HOST",
            "text",
            "localhost",
            "SMTP server. Setting it switches email to the `smtp` backend when no AWS "
            "credentials are set.",
            _SECTION,
        ),
        Variable("SMTP_PORT", "integer", "25", "SMTP port.", _SECTION),
        Variable(
            "SMTP_STARTTLS", "flag", "", "Upgrade the SMTP connection with STARTTLS.", _SECTION
        ),
        Variable("SMTP_USERNAME", "text", "", "SMTP login; none when unset.", _SECTION),
        Variable("SMTP_PASSWORD", "secret", "", "SMTP password.", _SECTION),
    )


def _one_line(value: str) -> str:
    """Header values never carry line breaks (no header injection from a subject)."""
    return " ".join(value.splitlines()).strip()


def _subject(value: str) -> str:
    subject = _one_line(value)
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1].rstrip() + "…"


def _message_id(message: Message, domain: str) -> str:
    """Stable per delivery (the retry key), so a retried send repeats the same Message-ID and
    receivers can drop the duplicate; random when the delivery has no retry key."""
    key = message.retry_key or ""
    if _SAFE_ID.match(key) and domain:
        return f"<{key}.{message.delivery_id}@{domain}>"
    return make_msgid(idstring=str(message.delivery_id), domain=domain or "localhost")


def _format_sender(raw: str) -> tuple[str, str]:
    """(From header value, bare address); a non-ASCII display name is RFC 2047 encoded."""
    name, address = parseaddr(raw)
    address = address or raw
    if not name:
        return address, address
    return formataddr((name, address), charset="utf-8"), address


def _header(name: str, value: str) -> bytes:
    """One header field, RFC 2047 encoded when it is not ASCII, folded at 78 columns."""
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode("ascii")


def _text_part(body: str, subtype: str) -> bytes:
    # Base64 keeps the UTF-8 body 7-bit clean for SES raw mail and for servers without
    # 8BITMIME (76-character lines, as RFC 2045 asks).
    encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii")
        + encoded
    )


def build_mime(message: Message, *, sender: str, max_body_len: int) -> OutgoingEmail:
    """The MIME message both backends send (one builder, so SES and SMTP mail look the same).

    Written out directly rather than through email.generator: its header folding made
    building a message cost more than sending it over SMTP."""
    if (
        not message.address
        or "@" not in message.address
        or _one_line(message.address) != message.address
    ):
        raise PermanentChannelError(
            "email: no valid address for this delivery",
            channel="email",
            delivery_id=message.delivery_id,
        )
    header_from, envelope_from = _format_sender(sender)
    domain = envelope_from.rpartition("@")[2]
    text = message.text[:max_body_len]
    html = message.html[:max_body_len] if message.html else None

    message_id = _message_id(message, domain)
    head = [
        _header("From", header_from),
        _header("To", message.address),
        _header("Subject", _subject(message.subject)),
        _header("Date", formatdate(usegmt=True)),
        _header("Message-ID", message_id),
    ]
    unsubscribe = _one_line(str(message.attributes.get("unsubscribe_url") or "")).strip("<>")
    if unsubscribe:
        # RFC 8058: kept on one line (a URL cannot be folded); at most 998 octets.
        head.append(f"List-Unsubscribe: <{unsubscribe[:900]}>\r\n".encode())
        head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    head.append(b"MIME-Version: 1.0\r\n")
    if html:
        # '=_' never occurs in base64 text, so the boundary cannot collide with a body.
        boundary = f"=_{uuid.uuid4().hex}".encode("ascii")
        head.append(b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n')
        delimiter = b"--" + boundary
        body = b"".join(
            (
                b"\r\n" + delimiter + b"\r\n",
                _text_part(text, "plain"),
                delimiter + b"\r\n",
                _text_part(html, "html"),
                delimiter + b"--\r\n",
            )
        )
    else:  # a single part: its headers are the message's last ones
        body = _text_part(text, "plain")
    return OutgoingEmail(
        sender=header_from,
        envelope_from=envelope_from,
        recipient=message.address,
        message_id=message_id,
        raw=b"".join(head) + body,
    )


# --------------------------------------------------------------------------- SES


_SES_RATE_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException"}
_SES_QUOTA_CODES = {"LimitExceededException"}
_SES_FAILED_CODES = {
    "MessageRejected",
    "BadRequestException",
    "MailFromDomainNotVerifiedException",
    "MailFromDomainNotVerified",
    "InvalidParameterValue",
    "ValidationException",
}
_SES_DISABLE_CODES = {
    "AccountSuspendedException",
    "AccountSendingPausedException",
    "SendingPausedException",
    "ConfigurationSetDoesNotExistException",
    "ConfigurationSetSendingPausedException",
    "NotFoundException",
    # The account's credentials or permissions are wrong: no message will go out.
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
}
_SES_SERVER_CODES = {
    "InternalFailure",
    "InternalError",
    "InternalServiceErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
}


@dataclass(frozen=True)
class SesSettings:
    sender: str
    aws: AwsSettings

    @classmethod
    def from_env(cls) -> SesSettings:
        return cls(sender=sender_address(), aws=AwsSettings.from_env())


class SesEmailChannel(EmailChannel):
    """Email through AWS SES v2 `send_email` with raw MIME content."""

    backend = "ses"
    max_body_len = 100_000
    rate_per_sec = 14.0  # SES's default production sending rate
    connect_timeout: ClassVar[float] = 5.0
    read_timeout: ClassVar[float] = 10.0

    def __init__(self, settings: SesSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or SesSettings.from_env()
        self._local = threading.local()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"))

    def _client(self) -> Any:
        """A sesv2 client per thread (creating clients is not thread-safe; using one is)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = aws_client(
                "sesv2",
                settings=self.settings.aws,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
            )
            self._local.client = client
        return client

    def build_payload(self, message: Message) -> OutgoingEmail:
        return build_mime(message, sender=self.settings.sender, max_body_len=self.max_body_len)

    def post(self, message: Message, payload: OutgoingEmail) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            response: dict[str, Any] = self._client().send_email(
                FromEmailAddress=payload.envelope_from,
                Destination={"ToAddresses": [payload.recipient]},
                Content={"Raw": {"Data": payload.raw}},
            )
        except ClientError as exc:
            raise self._client_error(message, exc) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosed.
            raise TransientChannelError(
                f"SES unreachable: {type(exc).__name__}",
                **self.error_context(message),
                response={"error": type(exc).__name__},
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise PermanentChannelError(
                "SES: no AWS credentials",
                disable_channel=True,
                **self.error_context(message),
                response={"error": type(exc).__name__},
            ) from exc
        except BotoCoreError as exc:
            raise PermanentChannelError(
                f"SES request not sent: {type(exc).__name__}",
                **self.error_context(message),
                response={"error": type(exc).__name__},
            ) from exc
        return response

    def parse_response(self, message: Message, response: dict[str, Any]) -> DeliveryResult:
        raw = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        request_id = response.get("ResponseMetadata", {}).get("RequestId")
        if request_id:
            raw["RequestId"] = request_id
        return DeliveryResult(
            provider_message_id=response.get("MessageId"),
            raw_response=raw,
        )

    def _client_error(self, message: Message, exc: Any) -> NotifierError:
        """Map a botocore ClientError by docs/providers.md's SES table."""
        error = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(error.get("Code") or "")
        text = str(error.get("Message") or "")
        status = meta.get("HTTPStatusCode")
        context: dict[str, Any] = {
            **self.error_context(message),
            "status_code": status,
            "response": {"code": code, "message": text, "request_id": meta.get("RequestId")},
        }
        summary = f"SES {code or 'error'}" + (f" (HTTP {status})" if status else "")
        log.warning(
            "ses send failed: delivery=%s code=%s status=%s", message.delivery_id, code, status
        )
        if "daily message quota exceeded" in text.lower() or code in _SES_QUOTA_CODES:
            return TransientChannelError(
                f"{summary}: daily sending quota reached",
                retry_after=DAILY_QUOTA_RETRY_AFTER,
                **context,
            )
        if code in _SES_RATE_CODES or status == 429:
            return TransientChannelError(f"{summary}: throttled", **context)
        if code in _SES_DISABLE_CODES:
            return PermanentChannelError(summary, disable_channel=True, **context)
        if code in _SES_FAILED_CODES:
            return PermanentChannelError(summary, **context)
        if code in _SES_SERVER_CODES or (isinstance(status, int) and status >= 500):
            return TransientChannelError(summary, **context)
        if isinstance(status, int) and 400 <= status < 500:
            return PermanentChannelError(summary, **context)
        return TransientChannelError(summary, **context)


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    username: str
    password: str = field(repr=False)
    sender: str
    configured: bool
    """SMTP_HOST is set (unset, the host is localhost, and the backend is not available)."""

    @staticmethod
    def uses_credentials_of(environ: Mapping[str, str]) -> bool:
        return bool(environ.get("SMTP_HOST", "").strip())

    @classmethod
    def from_env(cls) -> SmtpSettings:
        env = os.environ
        return cls(
            host=env.get("SMTP_HOST", "").strip() or "localhost",
            port=int(env.get("SMTP_PORT", "").strip() or 25),
            starttls=env.get("SMTP_STARTTLS", "").strip().lower() in ("1", "true", "yes"),
            username=env.get("SMTP_USERNAME", "").strip(),
            password=env.get("SMTP_PASSWORD", ""),
            sender=sender_address(),
            configured=cls.uses_credentials_of(env),
        )


class SmtpReceipt(NamedTuple):
    """The server's final reply to DATA, and the Message-ID of what it accepted."""

    code: int
    text: str
    message_id: str


class _Reply(Exception):
    """A non-success SMTP reply at one stage of a transaction (connect/auth/mail/rcpt/data)."""

    def __init__(self, stage: str, code: int, text: bytes | str):
        self.stage = stage
        self.code = code
        self.text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        super().__init__(f"{stage}: {code}")


class _Dropped(Exception):
    """The connection broke (closed, reset, timed out) at one stage of a transaction."""

    def __init__(self, stage: str, cause: BaseException):
        self.stage = stage
        self.cause = cause
        super().__init__(f"{stage}: {type(cause).__name__}")


@cache
def _local_hostname() -> str:
    """The EHLO name, looked up once per process (getfqdn can be slow on every connect)."""
    return socket.getfqdn()


def _transaction(conn: smtplib.SMTP, mail: OutgoingEmail) -> tuple[int, str]:
    """MAIL, RCPT, DATA on an open connection; returns the final reply of DATA."""
    stage = "mail"
    try:
        conn.ehlo_or_helo_if_needed()
        options = []
        if conn.does_esmtp and conn.has_extn("size"):
            options.append(f"SIZE={len(mail.raw)}")
        code, text = conn.mail(mail.envelope_from, options)
        if code != 250:
            raise _Reply(stage, code, text)
        stage = "rcpt"
        code, text = conn.rcpt(mail.recipient)
        if code not in (250, 251):
            raise _Reply(stage, code, text)
        stage = "data"
        code, text = conn.data(mail.raw)
        if code != 250:
            raise _Reply(stage, code, text)
    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
        raise _Reply(stage, exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPHeloError as exc:
        raise _Reply("helo", exc.smtp_code, exc.smtp_error) from exc
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        raise _Dropped(stage, exc) from exc
    return code, text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


class SmtpEmailChannel(EmailChannel):
    """Email through an SMTP relay, one reused connection per worker thread."""

    backend = "smtp"
    max_body_len = 100_000
    timeout: ClassVar[float] = 10.0
    """Seconds for connecting and for every reply (smtplib's socket timeout)."""

    def __init__(self, settings: SmtpSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or SmtpSettings.from_env()
        self._local = threading.local()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        return SmtpSettings.uses_credentials_of(environ)

    def unavailable(self, tenant: Any, category: str) -> str | None:
        return None if self.settings.configured else "channel not configured: SMTP_HOST unset"

    # -- configuration and connection ---------------------------------------------------

    def _open(self, config: SmtpSettings) -> smtplib.SMTP:
        conn = smtplib.SMTP(timeout=self.timeout, local_hostname=_local_hostname())
        try:
            code, text = conn.connect(config.host, config.port)
            if code != 220:
                raise _Reply("connect", code, text)
            conn.ehlo_or_helo_if_needed()
            if config.starttls:
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if config.username:
                conn.login(config.username, config.password)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _checkout(self) -> tuple[smtplib.SMTP, bool]:
        """This thread's open connection: (connection, reused)."""
        current = getattr(self._local, "conn", None)
        if current is not None and current.sock is not None:
            return current, True
        self.close()
        conn = self._open(self.settings)
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        """Close this thread's connection (QUIT); the next send opens a new one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            _close(conn, quit=True)

    def _discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            _close(conn)

    # -- the three steps -----------------------------------------------------------------

    def build_payload(self, message: Message) -> OutgoingEmail:
        return build_mime(message, sender=self.settings.sender, max_body_len=self.max_body_len)

    def post(self, message: Message, payload: OutgoingEmail) -> SmtpReceipt:
        for attempt in (1, 2):
            try:
                conn, reused = self._checkout()
            except Exception as exc:
                raise self._connect_error(message, exc) from exc
            try:
                code, text = _transaction(conn, payload)
                return SmtpReceipt(code, text, payload.message_id)
            except _Dropped as exc:
                self._discard()
                # A reused connection the server closed while idle: nothing was sent yet
                # (it broke before DATA), so one more try on a fresh connection is safe.
                if reused and attempt == 1 and exc.stage != "data":
                    continue
                raise self._dropped_error(message, exc) from exc
            except _Reply as exc:
                if exc.code == 421:  # the server is closing this connection
                    self._discard()
                    if reused and attempt == 1 and exc.stage == "mail":
                        continue  # e.g. "too many messages on this connection"
                else:
                    self._reset(conn)
                raise self._reply_error(message, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def parse_response(self, message: Message, response: SmtpReceipt) -> DeliveryResult:
        return DeliveryResult(
            provider_message_id=response.message_id,
            raw_response={"smtp": f"{response.code} {response.text}".strip()},
        )

    # -- error mapping -------------------------------------------------------------------

    def _reset(self, conn: smtplib.SMTP) -> None:
        """RSET after a refused transaction so the connection can carry the next message."""
        try:
            code, _ = conn.rset()
            if code != 250:
                self._discard()
        except (smtplib.SMTPException, OSError):
            self._discard()

    def _reply_error(self, message: Message, exc: _Reply) -> NotifierError:
        code, stage = exc.code, exc.stage
        context: dict[str, Any] = {
            **self.error_context(message),
            "status_code": code,
            "response": {"smtp": f"{code} {exc.text}".strip(), "stage": stage},
        }
        summary = f"SMTP {stage.upper()} refused ({code})"
        log.warning(
            "smtp send failed: delivery=%s stage=%s code=%s", message.delivery_id, stage, code
        )
        if 400 <= code < 500:
            retry_after = None
            if "daily message quota exceeded" in exc.text.lower():  # SES's SMTP interface
                retry_after = DAILY_QUOTA_RETRY_AFTER
            return TransientChannelError(summary, retry_after=retry_after, **context)
        if code in (530, 534, 535, 538) or stage == "auth":
            # Authentication failed or is required: no message will go out until fixed.
            return PermanentChannelError(summary, disable_channel=True, **context)
        if stage == "rcpt" and code in (550, 551, 553):
            enhanced = _ENHANCED_STATUS.match(exc.text)
            policy = enhanced is not None and enhanced.group(2) == "7"  # 5.7.x: not the address
            return PermanentChannelError(summary, suppress=not policy, **context)
        if 500 <= code < 600:
            return PermanentChannelError(summary, **context)
        return TransientChannelError(summary, **context)

    def _dropped_error(self, message: Message, exc: _Dropped) -> NotifierError:
        kind = "timed out" if _is_timeout(exc.cause) else "connection lost"
        log.warning(
            "smtp send failed: delivery=%s stage=%s %s", message.delivery_id, exc.stage, kind
        )
        return TransientChannelError(
            f"SMTP {kind} during {exc.stage.upper()}",
            **self.error_context(message),
            response={"error": type(exc.cause).__name__, "stage": exc.stage},
        )

    def _connect_error(self, message: Message, exc: BaseException) -> NotifierError:
        """Errors while connecting, saying hello, starting TLS or logging in."""
        context = self.error_context(message)
        name = type(exc).__name__
        if isinstance(exc, _Reply):
            # Any greeting but 220 (421 busy, 554 "no service here", often a temporary
            # block of our address): try again later.
            return TransientChannelError(
                f"SMTP greeting refused ({exc.code})",
                **context,
                status_code=exc.code,
                response={"smtp": f"{exc.code} {exc.text}".strip(), "stage": "connect"},
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return self._reply_error(message, _Reply("auth", exc.smtp_code, exc.smtp_error))
        if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPHeloError):
            return self._reply_error(message, _Reply("helo", exc.smtp_code, exc.smtp_error))
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_error(message, _Reply("starttls", exc.smtp_code, exc.smtp_error))
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientChannelError(
                "SMTP server closed the connection", **context, response={"error": name}
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentChannelError(
                "SMTP server certificate rejected",
                disable_channel=True,
                **context,
                response={"error": name},
            )
        if isinstance(exc, smtplib.SMTPException):
            # STARTTLS or AUTH not offered by the server, no usable AUTH mechanism.
            return PermanentChannelError(
                f"SMTP setup failed: {exc}",
                disable_channel=True,
                **context,
                response={"error": name},
            )
        if isinstance(exc, OSError):
            kind = "timed out" if _is_timeout(exc) else "unreachable"
            return TransientChannelError(f"SMTP server {kind}", **context, response={"error": name})
        return PermanentChannelError(f"SMTP setup failed: {name}", **context)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "timed out" in str(exc)


def _close(conn: smtplib.SMTP, *, quit: bool = False) -> None:
    if quit:
        try:
            conn.quit()
            return
        except (smtplib.SMTPException, OSError):
            pass
    with contextlib.suppress(OSError):
        conn.close()
