"""A local Web Push service: checks VAPID, decrypts aes128gcm bodies, scripted answers.

    with PushService(subject="mailto:ops@example.com", vapid_public_key=k) as service:
        sub = service.subscribe()            # a fake browser subscription (P-256 + auth)
        service.script(sub.id, 410)          # next answer for that endpoint
        ... send ...
        service.received[0].json["title"]    # the decrypted notification

Like a real push service it answers 401 to a missing/invalid VAPID authorization, 400 to a
body it cannot take and 413 to a body over 4,096 bytes; otherwise the next scripted answer
for the endpoint, else 201 with a Location header.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid02
from py_vapid.utils import b64urlencode

from tests.peers.http import LocalServer

MAX_BODY = 4096


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class VapidError(Exception):
    pass


def verify_vapid(
    authorization: str,
    *,
    audience: str,
    subject: str | None = None,
    public_key: str | None = None,
    now: float | None = None,
) -> tuple[dict[str, Any], str]:
    """Check an RFC 8292 `vapid t=<JWT>, k=<key>` header; returns (claims, k).

    ES256 signature with the key in `k`, `aud` == the push service origin, `exp` in the
    future and at most 24 h away, `sub` == `subject` (or any mailto:/https: when None), and
    `k` == `public_key` (the applicationServerKey the subscription was made with) if given.
    """
    scheme, _, params = authorization.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise VapidError(f"authorization scheme {scheme!r} is not vapid")
    parts: dict[str, str] = {}
    for item in params.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key.strip()] = value.strip()
    token, k = parts.get("t"), parts.get("k")
    if not token or not k:
        raise VapidError("vapid authorization needs t= and k=")
    if public_key is not None and k != public_key:
        raise VapidError("k is not the application server key of the subscription")
    try:
        header_b64, claims_b64, sig_b64 = token.split(".")
        header = json.loads(unb64url(header_b64))
        claims = json.loads(unb64url(claims_b64))
        signature = unb64url(sig_b64)
        signer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(k))
    except (ValueError, binascii.Error) as exc:
        raise VapidError(f"malformed vapid token: {exc}") from exc
    if header.get("alg") != "ES256" or header.get("typ", "JWT") != "JWT":
        raise VapidError(f"unexpected JWT header {header}")
    if len(signature) != 64:
        raise VapidError("ES256 signature must be 64 raw bytes")
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        signer.verify(der, f"{header_b64}.{claims_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise VapidError("bad ES256 signature") from exc
    now = time.time() if now is None else now
    if claims.get("aud") != audience:
        raise VapidError(f"aud {claims.get('aud')!r} != {audience!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int) or exp <= now or exp > now + 86_400 + 60:
        raise VapidError(f"exp {exp!r} not within the next 24 h")
    sub = claims.get("sub")
    if subject is not None and sub != subject:
        raise VapidError(f"sub {sub!r} != {subject!r}")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise VapidError(f"sub {sub!r} is not a mailto: or https: URL")
    return claims, k


@dataclass
class FakeSubscription:
    """A browser's PushSubscription: its endpoint, its ECDH key pair and auth secret."""

    id: str
    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def info(self) -> dict[str, Any]:
        """The subscription as the browser hands it over (and as pywebpush takes it)."""
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth_secret)},
        }


@dataclass
class Reply:
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class PushRequest:
    """One request the push service received (decrypted when it could be)."""

    subscription_id: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body_length: int
    ttl: int | None
    urgency: str | None
    topic: str | None
    vapid_claims: dict[str, Any] | None = None
    vapid_key: str | None = None
    error: str | None = None
    """Why the service refused it (VAPID, encoding, decryption), None when accepted."""
    payload: bytes | None = None
    status: int | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.payload or b"null")


def vapid_keys() -> tuple[str, str, Vapid02]:
    """A fresh VAPID key pair as the settings take it: (base64url raw private key,
    base64url public point, the Vapid object)."""
    vapid = Vapid02()
    vapid.generate_keys()
    private = b64urlencode(vapid.private_key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64urlencode(
        vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )
    return private, public, vapid


class PushService:
    def __init__(self, *, subject: str | None = None, vapid_public_key: str | None = None):
        self.subject = subject
        self.vapid_public_key = vapid_public_key
        self.subscriptions: dict[str, FakeSubscription] = {}
        self.received: list[PushRequest] = []
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = LocalServer(self._handler())

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self._server.origin

    def start(self) -> PushService:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> PushService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._scripts.clear()
            self.subscriptions.clear()

    # -- test controls -----------------------------------------------------------------

    def subscribe(self) -> FakeSubscription:
        sub_id = uuid.uuid4().hex
        sub = FakeSubscription(
            id=sub_id,
            endpoint=f"{self.origin}/push/{sub_id}",
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth_secret=os.urandom(16),
        )
        with self._lock:
            self.subscriptions[sub_id] = sub
        return sub

    def script(
        self,
        subscription_id: str,
        status: int,
        headers: dict[str, str] | None = None,
        body: bytes | str = b"",
        delay: float = 0.0,
    ) -> None:
        """Queue the next answer for one endpoint."""
        if isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._scripts[subscription_id].append(Reply(status, headers or {}, body, delay))

    def for_subscription(self, subscription_id: str) -> list[PushRequest]:
        return [r for r in self.received if r.subscription_id == subscription_id]

    # -- the service -------------------------------------------------------------------

    def _next_reply(self, subscription_id: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(subscription_id)
            if queue:
                return queue.popleft()
        return Reply(201, {"Location": f"{self.origin}/message/{uuid.uuid4().hex}"})

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = path.strip("/").split("/")
        sub_id = parts[1] if len(parts) == 2 and parts[0] == "push" else ""
        lower = {k.lower(): v for k, v in headers.items()}
        ttl_raw = lower.get("ttl")
        record = PushRequest(
            subscription_id=sub_id,
            path=path,
            headers=lower,
            body_length=len(body),
            ttl=int(ttl_raw) if ttl_raw and ttl_raw.isdigit() else None,
            urgency=lower.get("urgency"),
            topic=lower.get("topic"),
        )
        with self._lock:
            self.received.append(record)
            sub = self.subscriptions.get(sub_id)
        reply = self._check(record, sub, lower, body)
        if reply is None:
            reply = self._next_reply(sub_id)
        record.status = reply.status
        return reply

    def _check(
        self,
        record: PushRequest,
        sub: FakeSubscription | None,
        headers: dict[str, str],
        body: bytes,
    ) -> Reply | None:
        """What a real push service (and the browser) would refuse, else None."""

        def refuse(status: int, error: str) -> Reply:
            record.error = error
            return Reply(
                status,
                {"Content-Type": "application/json"},
                json.dumps({"code": status, "error": error}).encode(),
            )

        if sub is None:
            return refuse(404, "no such subscription")
        try:
            record.vapid_claims, record.vapid_key = verify_vapid(
                headers.get("authorization", ""),
                audience=self.origin,
                subject=self.subject,
                public_key=self.vapid_public_key,
            )
        except VapidError as exc:
            return refuse(401, f"vapid: {exc}")
        if record.ttl is None:
            return refuse(400, "missing or invalid TTL header")
        if record.urgency not in (None, "very-low", "low", "normal", "high"):
            return refuse(400, f"bad Urgency {record.urgency!r}")
        topic = record.topic
        if topic is not None and (len(topic) > 32 or any(c not in _B64URL_ALPHABET for c in topic)):
            return refuse(400, f"bad Topic {topic!r}")
        if len(body) > MAX_BODY:
            return refuse(413, f"body of {len(body)} bytes > {MAX_BODY}")
        if body:
            if headers.get("content-encoding") != "aes128gcm":
                return refuse(400, f"content-encoding {headers.get('content-encoding')!r}")
            try:
                record.payload = http_ece.decrypt(
                    body,
                    private_key=sub.private_key,
                    auth_secret=sub.auth_secret,
                    version="aes128gcm",
                )
            except Exception as exc:
                return refuse(400, f"cannot decrypt: {type(exc).__name__}: {exc}")
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = service._handle(self.path, dict(self.headers.items()), body)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
