"""Secrets at rest: tenant credentials and webhook signing secrets are stored sealed.

A `Sealed` column encrypts on the way into the database and decrypts on the way out, with
AES-SIV under a key derived from NOTIFIER_SECRET_KEY (HKDF, one key per column). AES-SIV is
deterministic: the same secret seals to the same text, so the bulk upsert still sees an
unchanged value as unchanged (the same directory document twice changes nothing). That
shows only whether two rows hold the same secret, never the secret.

A database dump, a backup or a read-only SQL account shows `sealed:v1:...`, not the token.
Changing NOTIFIER_SECRET_KEY makes stored secrets unreadable: `SealedValueUnreadable` says so
instead of handing a provider garbage.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from config.settings import require_secret_key

PREFIX = "sealed:v1:"


class SealedValueUnreadable(RuntimeError):
    pass


@functools.lru_cache(maxsize=16)
def _cipher(secret_key: str, purpose: str) -> AESSIV:
    key = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=None, info=f"notifier:{purpose}".encode()
    ).derive(secret_key.encode())
    return AESSIV(key)


def seal(value: str, purpose: str) -> str:
    sealed = _cipher(require_secret_key(), purpose).encrypt(value.encode(), None)
    return PREFIX + base64.urlsafe_b64encode(sealed).decode()


def unseal(stored: str, purpose: str) -> str:
    if not stored.startswith(PREFIX):
        raise SealedValueUnreadable(f"{purpose}: the stored value is not sealed")
    try:
        raw = base64.urlsafe_b64decode(stored.removeprefix(PREFIX))
        return _cipher(require_secret_key(), purpose).decrypt(raw, None).decode()
    except (InvalidTag, ValueError):
        raise SealedValueUnreadable(
            f"{purpose}: a stored secret cannot be opened with this NOTIFIER_SECRET_KEY "
            "(was the key changed?)"
        ) from None


class Sealed(TypeDecorator[str]):
    """A text column whose values are stored sealed; `purpose` names the column."""

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str) -> None:
        super().__init__()
        self.purpose = purpose

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else seal(value, self.purpose)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else unseal(value, self.purpose)
