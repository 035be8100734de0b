"""Webhook signing secrets: made here, shown to the caller once, kept encrypted at rest.

Signing needs the secret itself, so unlike channel tokens it cannot be stored as a hash: it is
sealed with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under WEBHOOK_SECRET_KEY.
Several keys may be given: the first seals, any of them opens, so a key can be rotated.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: The Standard Webhooks secret format: this prefix, then the key in base64.
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_sealing_key() -> str:
    """A key for WEBHOOK_SECRET_KEY (what the server generates when none is set)."""
    return Fernet.generate_key().decode()


class SecretUnreadable(Exception):
    """A stored secret opens with none of the keys: WEBHOOK_SECRET_KEY lost or changed."""


class SecretBox:
    """Seals and opens signing secrets with the configured keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("WEBHOOK_SECRET_KEY needs at least one key")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError:
            raise ValueError(
                "WEBHOOK_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes), comma-separated"
            ) from None

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        return cls([key.strip() for key in value.split(",") if key.strip()])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def reseal(self, sealed: str) -> str:
        """`sealed` sealed again with the first key (opened with any of them)."""
        return self._unsealed(self._fernet.rotate, sealed)

    def open(self, sealed: str) -> str:
        return self._unsealed(self._fernet.decrypt, sealed)

    @staticmethod
    def _unsealed(operation: Callable[[bytes], bytes], sealed: str) -> str:
        """`operation` on `sealed`, whose failure to open says so in our own words."""
        try:
            return operation(sealed.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "a webhook secret opens with none of WEBHOOK_SECRET_KEY's keys"
            ) from None
