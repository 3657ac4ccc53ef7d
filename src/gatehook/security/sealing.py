"""Tenants' secrets sealed at rest with AES-256-GCM.

A sealed value is stored in place of the secret as
``{"sealed": "aes-256-gcm", "kid": <key id>, "nonce": <base64>, "data": <base64 ciphertext +
tag>}``.
The key id is the first 16 hex digits of the key's SHA-256, so keys need no names. The
additional authenticated data binds a value to where it is stored (tenant, action, version,
field): a sealed value copied into another document does not open.

Keys (``SecretsSettings``): the current key seals; older keys only open, until
``gatehook secrets rotate`` has sealed everything again under the current one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehook.errors import ConfigError, GatehookError
from gatehook.settings import SecretsSettings

__all__ = [
    "Sealer",
    "SealingError",
    "is_sealed",
    "key_id",
    "new_key",
    "parse_key",
    "sealer_from",
]


ALGORITHM = "aes-256-gcm"


class SealingError(GatehookError):
    """A sealed value cannot be opened (unknown key, or moved or altered)."""

    code = "internal"


def new_key() -> str:
    """A fresh random key, base64 (what ``GATEHOOK_SECRETS__KEY`` takes)."""
    return base64.b64encode(os.urandom(32)).decode()


def parse_key(text: str) -> bytes:
    """A 32-byte key from its base64 text; ``ConfigError`` saying what is wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("a secrets key must be base64 (`gatehook secrets new-key`)") from None
    if len(key) != 32:
        raise ConfigError(f"a secrets key must be 32 bytes (AES-256); this one is {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """The id stored with every value sealed under ``key``."""
    return hashlib.sha256(key).hexdigest()[:16]


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is a sealed value as stored."""
    return isinstance(value, dict) and value.get("sealed") == ALGORITHM and "data" in value


class Sealer:
    """Seals with the current key; opens with any key it was given."""

    def __init__(self, current: bytes, older: Iterable[bytes] = ()) -> None:
        self.kid = key_id(current)
        self._keys = {key_id(k): AESGCM(k) for k in (*older, current)}

    @property
    def kids(self) -> set[str]:
        """The ids of every key this sealer can open with."""
        return set(self._keys)

    def seal(self, secret: str, where: str) -> dict[str, Any]:
        """``secret`` sealed under the current key, bound to ``where``."""
        nonce = os.urandom(12)
        data = self._keys[self.kid].encrypt(nonce, secret.encode(), where.encode())
        return {
            "sealed": ALGORITHM,
            "kid": self.kid,
            "nonce": base64.b64encode(nonce).decode(),
            "data": base64.b64encode(data).decode(),
        }

    def open(self, sealed: dict[str, Any], where: str) -> str:
        """The secret in ``sealed``; ``SealingError`` when it cannot be opened here."""
        aead = self._keys.get(str(sealed.get("kid")))
        if aead is None:
            raise SealingError(
                f"a secret is sealed with key {sealed.get('kid')}, which is not given"
                " (GATEHOOK_SECRETS__KEY / __OLD_KEYS)"
            )
        try:
            nonce = base64.b64decode(sealed["nonce"])
            data = base64.b64decode(sealed["data"])
            return aead.decrypt(nonce, data, where.encode()).decode()
        except (InvalidTag, KeyError, ValueError, binascii.Error):
            raise SealingError(f"the secret at {where} was altered or moved") from None


def sealer_from(settings: SecretsSettings) -> Sealer | None:
    """The sealer the settings give (``None``: no key, secrets are stored in clear)."""
    current = settings.current_key()
    if current is None:
        if settings.old_keys:
            raise ConfigError("GATEHOOK_SECRETS__OLD_KEYS is set without a current key")
        return None
    return Sealer(parse_key(current), [parse_key(k.get_secret_value()) for k in settings.old_keys])
