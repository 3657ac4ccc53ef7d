"""Ingress: how identity providers that call only HTTP hooks reach a tenant's flows (the
``gatehook http`` gateway), the pure part.

A tenant declares in its flows file which providers may call it and with which secrets:

    ingress:
      zitadel: {signing_keys: ["<ZITADEL target signing key>", ...]}
      kratos:  {api_keys: ["<the web hook's api_key value>"], header: Authorization}
      okta:    {api_keys: ["<the inline hook's authorization value>"], header: Authorization}
      hydra:   {api_keys: ["<the token hook's api_key value>"], header: Authorization}

More than one secret per provider lets a key be rotated without refusing a call. The secrets
are sealed at rest and read back masked (``********``); a masked entry in a file keeps the
secret stored at its position.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "MASK",
    "PROVIDERS",
    "IngressSpec",
    "Provider",
    "masked",
    "merge_masked",
    "shared_secret_refusal",
    "zitadel_signature_refusal",
]

MASK = "********"
Provider = Literal["zitadel", "kratos", "okta", "hydra"]
PROVIDERS: tuple[Provider, ...] = ("zitadel", "kratos", "okta", "hydra")
SIGNATURE_TOLERANCE_S = 300  # ZITADEL's own (pkg/actions/signing.go)

Secret = Annotated[str, StringConstraints(min_length=8, max_length=512)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]


class ZitadelIngress(BaseModel):
    """ZITADEL Actions v2 targets: the targets' signing keys (``ZITADEL-Signature``)."""

    model_config = ConfigDict(extra="forbid")

    signing_keys: list[Secret] = Field(min_length=1, max_length=8)

    def secrets(self) -> list[str]:
        return list(self.signing_keys)


class SharedSecretIngress(BaseModel):
    """A provider that sends a configured header value (Kratos's and Hydra's ``api_key``
    auth, Okta's inline hook authorization header)."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[Secret] = Field(min_length=1, max_length=8)
    header: HeaderName = "Authorization"

    def secrets(self) -> list[str]:
        return list(self.api_keys)


class IngressSpec(BaseModel):
    """The providers that may call a tenant through the gateway, with their secrets."""

    model_config = ConfigDict(extra="forbid")

    zitadel: ZitadelIngress | None = None
    kratos: SharedSecretIngress | None = None
    okta: SharedSecretIngress | None = None
    hydra: SharedSecretIngress | None = None

    def providers(self) -> dict[str, dict[str, Any]]:
        """Provider -> ``{"secrets": [...], "header": ...}`` (as stored, before sealing)."""
        out: dict[str, dict[str, Any]] = {}
        for name in PROVIDERS:
            spec = getattr(self, name)
            if spec is None:
                continue
            entry: dict[str, Any] = {"secrets": spec.secrets()}
            if isinstance(spec, SharedSecretIngress):
                entry["header"] = spec.header
            out[name] = entry
        return out


def merge_masked(
    wanted: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``wanted`` with each masked secret replaced by the stored one at its position; a
    masked secret with nothing stored there is refused (``ValueError``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in wanted.items():
        old = (stored.get(name) or {}).get("secrets") or []
        secrets = []
        for i, secret in enumerate(entry["secrets"]):
            if secret == MASK:
                if i >= len(old):
                    raise ValueError(f"ingress.{name}: secret {i + 1} is masked, none is stored")
                secret = old[i]
            secrets.append(secret)
        out[name] = {**entry, "secrets": secrets}
    return out


def masked(providers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The providers as read back: every secret shown as ``MASK``."""
    return {
        name: {**entry, "secrets": [MASK for _ in entry.get("secrets") or []]}
        for name, entry in providers.items()
    }


def zitadel_signature_refusal(
    header: str | None, body: bytes, keys: list[str], now: float
) -> str | None:
    """Why ``header`` (``ZITADEL-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``) does not sign
    ``body`` under one of ``keys`` within the tolerance; ``None`` when it does."""
    if not header:
        return "no ZITADEL-Signature header"
    stamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                stamp = int(value)
            except ValueError:
                return "ZITADEL-Signature: the timestamp is not a number"
        elif name == "v1" and value:
            signatures.append(value.lower())
    if stamp is None or not signatures:
        return "ZITADEL-Signature: needs t=<unix seconds> and v1=<hex HMAC-SHA256>"
    if abs(now - stamp) > SIGNATURE_TOLERANCE_S:
        return f"ZITADEL-Signature: timestamp outside {SIGNATURE_TOLERANCE_S} s of now"
    signed = f"{stamp}.".encode() + body
    given = [_bytes(s) for s in signatures]
    for key in keys:
        expected = hmac.new(_bytes(key), signed, hashlib.sha256).hexdigest().encode()
        if any(hmac.compare_digest(expected, s) for s in given):
            return None
    return "ZITADEL-Signature: no signature matches a signing key"


def _bytes(text: str) -> bytes:
    """``text`` as bytes for a constant-time comparison: any header value (non-ASCII, or
    bytes an HTTP server decoded as surrogates) compares, never raises."""
    return text.encode("utf-8", "surrogatepass")


def shared_secret_refusal(value: str | None, keys: list[str], header: str) -> str | None:
    """Why the ``header`` value ``value`` is none of ``keys`` (compared in constant time);
    ``None`` when it is one. ``Bearer <key>`` is accepted for ``<key>`` too."""
    if not value:
        return f"no {header} header"
    candidates = [value]
    if value.lower().startswith("bearer "):
        candidates.append(value[7:])
    for key in keys:
        for candidate in candidates:
            if hmac.compare_digest(_bytes(candidate), _bytes(key)):
                return None
    return f"{header}: not a configured key"
