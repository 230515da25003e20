"""Verification of SNS HTTP(S) messages (the SES bounce and complaint feed).

Follows the AWS rules for SNS HTTP(S) message signatures: the message-type header matches the
body's Type, the TopicArn is one we subscribed, the signing certificate comes over https
from sns.<region>.amazonaws.com, and the signature (PKCS#1 v1.5; SHA1 for version 1,
SHA256 for version 2) covers the canonical string to sign.

Certificates and subscription confirmations are fetched through a pluggable `Fetcher`, so
tests serve their own self-signed certificate without touching the network.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import threading
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

Fetcher = Callable[[str], bytes]
"""GET an https URL and return the body; raises OSError when it cannot."""

SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com")
MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
SIGNED_KEYS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_KEYS["UnsubscribeConfirmation"] = SIGNED_KEYS["SubscriptionConfirmation"]
OPTIONAL_KEYS = frozenset({"Subject"})
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_TIMEOUT = 5.0
MAX_CERT_BYTES = 64 * 1024
CACHE_SIZE = 16


class SnsRejected(Exception):
    """Not a genuine SNS message of ours (HTTP 403); the message says why."""


class CertificateUnavailable(Exception):
    """The signing certificate could not be fetched (HTTP 503: let SNS retry later)."""


def fetch_url(url: str) -> bytes:
    """The production fetcher: a plain GET with a timeout and a size cap."""
    # Only URLs that passed is_sns_url (https, an SNS host) get here.
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
        body: bytes = response.read(MAX_CERT_BYTES + 1)
    if len(body) > MAX_CERT_BYTES:
        raise OSError(f"response from {urlsplit(url).hostname} is over {MAX_CERT_BYTES} bytes")
    return body


def is_sns_url(url: str, *, pem: bool) -> bool:
    """https://sns.<region>.amazonaws.com/..., no port or credentials; a certificate URL
    must also end in .pem and carry no query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme != "https" or parts.fragment or parts.netloc != parts.hostname:
        return False
    if not SNS_HOST.fullmatch(parts.netloc):
        return False
    return (parts.path.endswith(".pem") and not parts.query) if pem else True


def string_to_sign(message: dict[str, Any]) -> bytes:
    lines: list[str] = []
    for key in SIGNED_KEYS[message["Type"]]:
        if key in OPTIONAL_KEYS and key not in message:
            continue
        lines.append(f"{key}\n{message[key]}\n")
    return "".join(lines).encode()


class SnsVerifier:
    """Checks SNS messages against the known topics; caches signing certificates."""

    def __init__(self, topics: Iterable[str], fetch: Fetcher = fetch_url):
        self.topics = frozenset(topics)
        self.fetch = fetch
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, header_type: str | None, message: Any, now: dt.datetime) -> dict[str, str]:
        """The message, if genuine; raises SnsRejected or CertificateUnavailable."""
        if not isinstance(message, dict):
            raise SnsRejected("not an SNS message (a JSON object)")
        kind = message.get("Type")
        if kind not in MESSAGE_TYPES:
            raise SnsRejected("unknown or missing Type")
        if header_type != kind:
            raise SnsRejected("x-amz-sns-message-type header does not match Type")
        if message.get("TopicArn") not in self.topics:
            raise SnsRejected("unknown TopicArn")
        needed = [k for k in SIGNED_KEYS[kind] if k not in OPTIONAL_KEYS or k in message]
        needed += ["Signature", "SignatureVersion", "SigningCertURL"]
        if not all(isinstance(message.get(key), str) for key in needed):
            raise SnsRejected("missing or non-string fields")
        hash_factory = HASHES.get(message["SignatureVersion"])
        if hash_factory is None:
            raise SnsRejected("unsupported SignatureVersion")
        if not is_sns_url(message["SigningCertURL"], pem=True):
            raise SnsRejected("SigningCertURL is not an SNS certificate URL")
        if kind != "Notification" and not is_sns_url(message["SubscribeURL"], pem=False):
            raise SnsRejected("SubscribeURL is not an SNS URL")
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsRejected("Signature is not base64") from exc
        public_key = self._public_key(message["SigningCertURL"], now)
        try:
            public_key.verify(
                signature, string_to_sign(message), padding.PKCS1v15(), hash_factory()
            )
        except InvalidSignature as exc:
            raise SnsRejected("bad signature") from exc
        return message

    def confirm_subscription(self, message: dict[str, str]) -> None:
        """Visit the SubscribeURL of a verified SubscriptionConfirmation (`verify` checked
        that it is an SNS URL)."""
        self.fetch(message["SubscribeURL"])

    def _public_key(self, url: str, now: dt.datetime) -> RSAPublicKey:
        with self._lock:
            certificate = self._certificates.get(url)
        if certificate is None:
            try:
                pem = self.fetch(url)
            except OSError as exc:
                raise CertificateUnavailable(
                    f"cannot fetch the signing certificate: {exc}"
                ) from exc
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise SnsRejected("SigningCertURL did not return a PEM certificate") from exc
            with self._lock:
                self._certificates[url] = certificate
                while len(self._certificates) > CACHE_SIZE:
                    self._certificates.popitem(last=False)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsRejected("the signing certificate is not valid now")
        public_key = certificate.public_key()
        if not isinstance(public_key, RSAPublicKey):
            raise SnsRejected("the signing certificate has no RSA key")
        return public_key
