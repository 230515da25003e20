"""SMS through AWS SNS `publish(PhoneNumber=...)` (E.164, Transactional, SenderID).

Also home of the SNS plumbing shared with `channels.topic`: a thread-safe client cache
with botocore's own retries turned off, and the mapping of SNS errors onto the channel
error tree (docs/providers.md, "SMS").
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from botocore import exceptions as bce

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

# ---------------------------------------------------------------------------------------
# SNS plumbing shared by the SMS and topic channels
# ---------------------------------------------------------------------------------------

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def sns_client(aws: AwsSettings, connect_timeout: float, read_timeout: float) -> Any:
    """A boto3 SNS client for these settings, cached per configuration.

    botocore clients are thread-safe once built; building goes through a private Session
    under a lock (the default session is not thread-safe). botocore's retries are off so
    the task's retry budget is the only one.
    """
    key = (aws, connect_timeout, read_timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = aws_client(
                "sns", settings=aws, connect_timeout=connect_timeout, read_timeout=read_timeout
            )
            _clients[key] = client
        return client


def reset_sns_clients() -> None:
    """Forget the cached clients (tests change the environment)."""
    with _clients_lock:
        _clients.clear()


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottling",
        "KMSThrottlingException",
    }
)
SERVER_CODES = frozenset(
    {"InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable"}
)
# Credentials / permissions / account set-up: no tenant's message will get through.
CONFIG_CODES = frozenset(
    {
        "AuthorizationError",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "OptInRequired",
        "InvalidSecurity",
        "KMSAccessDenied",
        "KMSDisabled",
        "KMSInvalidState",
        "KMSNotFound",
        "KMSOptInRequired",
    }
)
INVALID_CODES = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "ParameterValueInvalid",
        "MissingParameter",
        "ValidationError",
        "ValidationException",
    }
)


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def client_error_response(exc: bce.ClientError, redact: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON-able part of a botocore error response, without headers or addresses."""
    redact = tuple(redact)
    error = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    return {
        "Error": {
            "Code": str(error.get("Code", "")),
            "Type": str(error.get("Type", "")),
            "Message": _redact(str(error.get("Message", "")), redact),
        },
        "RequestId": meta.get("RequestId"),
        "HTTPStatusCode": meta.get("HTTPStatusCode"),
    }


def sns_error(
    exc: Exception,
    *,
    context: dict[str, Any],
    operation: str,
    redact: Iterable[str] = (),
    invalid_suppresses: bool = False,
) -> NotifierError:
    """Map a boto3/botocore exception from an SNS call onto the channel error tree.

    `redact` strings (the phone number) are cut out of the provider's message, which may
    quote them. `invalid_suppresses` marks InvalidParameter as a bad address (suppress).
    """
    redact = tuple(redact)
    if isinstance(exc, bce.ClientError):
        response = client_error_response(exc, redact)
        code = response["Error"]["Code"]
        status = response["HTTPStatusCode"]
        status_code = int(status) if isinstance(status, int) else None
        text = f"SNS {operation} {code or 'error'}: {response['Error']['Message']}".rstrip(": ")
        ctx = {**context, "status_code": status_code, "response": response}
        if code in THROTTLING_CODES or status_code == 429:
            return TransientChannelError(text, **ctx)
        if code in SERVER_CODES or (status_code is not None and status_code >= 500):
            return TransientChannelError(text, **ctx)
        if code in CONFIG_CODES:
            return PermanentChannelError(text, disable_channel=True, **ctx)
        if code == "OptedOut" or "opted out" in response["Error"]["Message"].lower():
            return PermanentChannelError(text, suppress=True, **ctx)
        if code in INVALID_CODES:
            return PermanentChannelError(text, suppress=invalid_suppresses, **ctx)
        return PermanentChannelError(text, **ctx)
    name = type(exc).__name__
    ctx = {**context, "status_code": None, "response": {"error": name}}
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError | bce.IncompleteReadError):
        # Connect/read timeouts, refused or dropped connections, TLS failures.
        return TransientChannelError(f"SNS {operation} network error: {name}", **ctx)
    if isinstance(exc, bce.CredentialRetrievalError):
        return TransientChannelError(f"SNS {operation} credentials unavailable: {name}", **ctx)
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return PermanentChannelError(
            f"SNS {operation}: no AWS credentials configured", disable_channel=True, **ctx
        )
    if isinstance(exc, bce.BotoCoreError):
        return PermanentChannelError(f"SNS {operation} request rejected by botocore: {name}", **ctx)
    return PermanentChannelError(f"SNS {operation} failed: {name}", **ctx)


def response_summary(response: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a successful SNS response (ids only, no headers)."""
    meta = response.get("ResponseMetadata", {}) or {}
    summary = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    summary["RequestId"] = meta.get("RequestId")
    return summary


# ---------------------------------------------------------------------------------------
# SMS segment budget
# ---------------------------------------------------------------------------------------

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # sent as ESC + char: two septets each

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, gsm: bool) -> list[int]:
    if gsm:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    # UCS-2 as SNS sends it: UTF-16 code units; a surrogate pair is never split.
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _parts_needed(costs: list[int], gsm: bool) -> int:
    single, per_part = (GSM7_SINGLE, GSM7_PART) if gsm else (UCS2_SINGLE, UCS2_PART)
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:  # an escape sequence or surrogate pair never straddles two parts
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def sms_parts(text: str) -> int:
    """How many SMS parts `text` takes (0 for an empty text)."""
    if not text:
        return 0
    gsm = is_gsm7(text)
    return _parts_needed(_unit_costs(text, gsm), gsm)


def fit_sms(text: str, max_parts: int, keep: str = "") -> str:
    """`text` cut to at most `max_parts` SMS parts, ending in an ellipsis when cut; `keep`
    (the preference center line) ends the message whole, after the ellipsis.

    GSM-7 text: 160 characters in one part, 153 per part beyond (extension characters
    such as € [ ] { } count double). Any other character makes the whole message UCS-2:
    70 / 67 per part. A cut GSM-7 text ends in "..." (the "…" character is not GSM-7 and
    would turn the message into UCS-2); a cut UCS-2 text ends in "…".
    """
    max_parts = max(1, max_parts)
    whole = text + keep
    if sms_parts(whole) <= max_parts:
        return whole
    gsm = is_gsm7(whole)
    ellipsis = "..." if gsm else "…"
    costs = _unit_costs(text, gsm)
    tail = _unit_costs(ellipsis + keep, gsm)
    # The longest prefix that still fits with the ellipsis; binary search on its length
    # (fitting is monotonic in the prefix length).
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _parts_needed(costs[:mid] + tail, gsm) <= max_parts:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ellipsis + keep


# ---------------------------------------------------------------------------------------
# The channel
# ---------------------------------------------------------------------------------------

_SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{3,11}")


def sender_id() -> str | None:
    """SNS_SMS_SENDER_ID (default "KyoGym") when valid: 3-11 alphanumerics, >= 1 letter."""
    value = os.environ.get("SNS_SMS_SENDER_ID", "KyoGym").strip()
    return value if _SENDER_ID.fullmatch(value) else None


def _max_parts() -> int:
    raw = os.environ.get("NOTIFIER_SMS_MAX_PARTS", "").strip()
    try:
        return max(1, int(raw)) if raw else 2
    except ValueError:
        log.warning("NOTIFIER_SMS_MAX_PARTS=%r is not an integer; using 2", raw)
        return 2


@dataclass(frozen=True)
class SmsSettings:
    sender_id: str | None
    default_region: str
    """Where national numbers are read (`0912...` in TW is +886912...)."""
    max_parts: int
    aws: AwsSettings

    @classmethod
    def from_env(cls) -> SmsSettings:
        return cls(
            sender_id=sender_id(),
            default_region=os.environ.get("NOTIFIER_SMS_DEFAULT_REGION", "").strip().upper()
            or "TW",
            max_parts=_max_parts(),
            aws=AwsSettings.from_env(),
        )


def normalize_phone(address: str, region: str) -> str | None:
    """The E.164 form of `address` (national numbers read in `region`), or None."""
    import phonenumbers  # 0.1 s of metadata, loaded when SMS first sends

    try:
        number = phonenumbers.parse(address, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_SECTION = "Channel: SMS"


class SmsChannel(Channel):
    name = "sms"
    label = "SMS"
    outbox_view = "sms"
    outbox_color = "#9333ea"
    variables = (
        Variable(
            "SNS_SMS_SENDER_ID",
            "text",
            "KyoGym",
            "SMS sender id (3-11 letters and digits, at least one letter); an invalid one is "
            "left out.",
            _SECTION,
        ),
        Variable(
            "NOTIFIER_SMS_DEFAULT_REGION",
            "text",
            "TW",
            "Region in which national phone numbers are read (`0912...` becomes `+886912...`).",
            _SECTION,
        ),
        Variable(
            "NOTIFIER_SMS_MAX_PARTS",
            "integer",
            "2",
            "Most SMS segments one message may take; the text is cut to fit.",
            _SECTION,
        ),
    )


class SnsSmsChannel(SmsChannel):
    backend = "sns"
    max_body_len = 1_600  # SNS's limit for one SMS publish, in bytes
    rate_per_sec = 20.0

    connect_timeout: ClassVar[float] = 5.0
    read_timeout: ClassVar[float] = 10.0

    def __init__(self, settings: SmsSettings | None = None) -> None:
        super().__init__()
        self.settings = settings or SmsSettings.from_env()

    @classmethod
    def uses_credentials_of(cls, environ: Mapping[str, str]) -> bool:
        return bool(environ.get("AWS_ACCESS_KEY_ID") or environ.get("AWS_PROFILE"))

    def build_payload(self, message: Message) -> dict[str, Any]:
        context = self.error_context(message)
        address = (message.address or "").strip()
        if not address:
            raise PermanentChannelError("no phone number for the recipient", **context)
        e164 = normalize_phone(address, self.settings.default_region)
        if e164 is None:
            raise PermanentChannelError("invalid phone number", suppress=True, **context)
        text = (message.text or message.subject or "").strip()
        if not text:
            raise PermanentChannelError("empty SMS text", **context)
        # The preference center line ends the text: a text cut to fit keeps it whole.
        footer = str(message.attributes.get("footer") or "")
        keep = ""
        if footer and text.endswith(footer) and len(text) > len(footer):
            text, keep = text[: -len(footer)].rstrip(), "\n" + footer
        max_parts = self.settings.max_parts
        attributes: dict[str, dict[str, str]] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
        }
        sender = self.settings.sender_id
        if sender:
            attributes["AWS.SNS.SMS.SenderID"] = {"DataType": "String", "StringValue": sender}
        return {
            "PhoneNumber": e164,
            "Message": fit_sms(text, max_parts, keep),
            "MessageAttributes": attributes,
        }

    def post(self, message: Message, payload: dict[str, Any]) -> dict[str, Any]:
        context = self.error_context(message)
        number: str = payload["PhoneNumber"]
        redact = (number, number.lstrip("+"), message.address or "")
        client = sns_client(self.settings.aws, self.connect_timeout, self.read_timeout)
        try:
            check = client.check_if_phone_number_is_opted_out(phoneNumber=number)
        except Exception as exc:
            raise sns_error(
                exc,
                context=context,
                operation="CheckIfPhoneNumberIsOptedOut",
                redact=redact,
                invalid_suppresses=True,
            ) from None  # the provider's text may quote the number
        if check.get("isOptedOut"):
            raise PermanentChannelError(
                "phone number opted out of SMS",
                suppress=True,
                status_code=check.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                response={"isOptedOut": True, **_request_id(check)},
                **context,
            )
        try:
            response: dict[str, Any] = client.publish(**payload)
        except Exception as exc:
            error = sns_error(exc, context=context, operation="Publish", redact=redact)
            log.info("sms delivery %s: %s", message.delivery_id, error.describe())
            raise error from None  # the provider's text may quote the number
        return response

    def parse_response(self, message: Message, response: dict[str, Any]) -> DeliveryResult:
        return DeliveryResult(
            provider_message_id=response.get("MessageId"),
            raw_response=response_summary(response),
        )


def _request_id(response: dict[str, Any]) -> dict[str, Any]:
    return {"RequestId": response.get("ResponseMetadata", {}).get("RequestId")}
