"""Target actions, the pure part: what a target is, the request body and signature gatehook
sends, and how the endpoint's answer becomes an action output (docs/contract.md, "Target
actions"). Compatible with ZITADEL Actions v2 targets: a target written for ZITADEL verifies
gatehook's signature and reads its payloads unchanged.

No I/O here: the HTTP call, the SSRF guard and the circuit breaker live in
``transport.targets``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gatehook.domain.contract import ActionOutput, is_absolute_http_url

__all__ = [
    "SIGNATURE_HEADER",
    "TargetResponseError",
    "TargetSpec",
    "b64_value",
    "function_name",
    "map_response",
    "signature",
    "verify_signature",
    "zitadel_payload",
]

SIGNATURE_HEADER = "ZITADEL-Signature"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# Headers gatehook sets itself, or that would change how the request is carried.
_RESERVED = {
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    SIGNATURE_HEADER.lower(),
}

# The function names ZITADEL gives its v2 function executions, by gatehook slot.
_FUNCTIONS = {
    ("complement_token", "pre_userinfo_creation"): "function/preuserinfo",
    ("complement_token", "pre_access_token_creation"): "function/preaccesstoken",
    ("customize_saml_response", "pre_saml_response"): "function/presamlresponse",
}
# Claims under this prefix are ZITADEL's own: a target cannot add them (as in ZITADEL).
_RESERVED_CLAIM_PREFIX = "urn:zitadel:iam"


class TargetSpec(BaseModel):
    """Where a target action sends its request, how, and how its answer is used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str = Field(max_length=2048, description="absolute http(s) URL")
    type: Literal["call", "webhook", "async"] = Field(
        default="call",
        description="call: the response is used; webhook: only the status counts;"
        " async: sent after the reply, never affects the decision",
    )
    payload: Literal["zitadel", "gatehook"] = Field(
        default="zitadel",
        description="zitadel: ZITADEL v2 function payloads; gatehook: the action input,"
        " answered with an action output",
    )
    signing_key: str | None = Field(
        default=None,
        max_length=512,
        description="HMAC key of the ZITADEL-Signature header; generated when absent, shown"
        " once, masked on every read",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="non-secret headers")

    @field_validator("endpoint")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not is_absolute_http_url(value):
            raise ValueError("endpoint must be an absolute http(s) URL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 32:
            raise ValueError("at most 32 headers")
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} must match [A-Za-z0-9-]{{1,64}}")
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name} is set by gatehook")
            if len(text) > 1024 or "\r" in text or "\n" in text:
                raise ValueError(f"header {name}: at most 1024 characters, one line")
        return value


class TargetResponseError(ValueError):
    """The endpoint answered something that is not a valid response."""


def function_name(flow_type: str, trigger: str) -> str:
    """ZITADEL's function name for the slot, ``<flow_type>.<trigger>`` where it has none."""
    return _FUNCTIONS.get((flow_type, trigger), f"{flow_type}.{trigger}")


def signature(key: str, timestamp: int, body: bytes) -> str:
    """The ``ZITADEL-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256>`` of
    ``"<t>.<raw body>"`` under the signing key, as ZITADEL signs its target requests."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(header: str, body: bytes, key: str) -> bool:
    """Whether ``header`` signs ``body`` under ``key`` (receivers; tests)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    return hmac.compare_digest(signature(key, timestamp, body), header.strip())


def b64_value(value: Any) -> str:
    """A metadata value as ZITADEL carries it: base64 of the text (JSON for a non-string)."""
    raw = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def zitadel_payload(inp: dict[str, Any]) -> dict[str, Any]:
    """The ZITADEL v2 function payload for an action input (the dict a script receives).

    ``user.metadata`` (key -> value) becomes ``user_metadata`` with base64 values (JSON text
    for non-strings), ``user.grants`` becomes ``user_grants`` with snake_case keys, and the
    request's ``context`` supplies ``org`` and ``userinfo``.
    """
    user = dict(inp.get("user") or {})
    metadata = user.get("metadata") or {}
    grants = user.get("grants") or []
    context = inp.get("context") or {}
    return {
        "function": function_name(str(inp.get("flow_type")), str(inp.get("trigger"))),
        "userinfo": context.get("userinfo"),
        "user": user,
        "user_metadata": [{"key": str(k), "value": b64_value(v)} for k, v in metadata.items()],
        "org": context.get("org"),
        "user_grants": [
            {_snake(k): v for k, v in g.items()} if isinstance(g, dict) else g for g in grants
        ],
    }


def _entries(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise TargetResponseError(f"{name} must be a list of objects")
    return value


def map_response(function: str, body: Any) -> ActionOutput:
    """The action output of a ``payload: zitadel`` call target's answer.

    ``append_claims`` -> claims (keys under ``urn:zitadel:iam`` are refused, as ZITADEL
    does); ``set_user_metadata`` (base64 values) -> metadata, decoded to text;
    ``append_log_claims`` -> the claim ``urn:zitadel:iam:action:<function>:log`` (a list of
    strings, as ZITADEL writes it); ``append_attribute`` -> saml_attributes;
    ``forwardedStatusCode`` >= 400 -> block with ``forwardedErrorMessage``. Anything else
    (``{}``, an echo of the request) -> continue, no changes.
    """
    if not isinstance(body, dict):
        return ActionOutput()
    status = body.get("forwardedStatusCode")
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        message = body.get("forwardedErrorMessage")
        return ActionOutput(
            kind="block",
            reason="target_refused",
            message=str(message)[:2048] if message is not None else None,
        )
    claims: dict[str, Any] = {}
    for entry in _entries(body, "append_claims"):
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            raise TargetResponseError("append_claims: every entry needs a key")
        if key.startswith(_RESERVED_CLAIM_PREFIX):
            continue
        claims[key] = entry.get("value")
    logs = body.get("append_log_claims") or []
    if not isinstance(logs, list):
        raise TargetResponseError("append_log_claims must be a list of strings")
    if logs:
        claims[f"urn:zitadel:iam:action:{function}:log"] = [str(x) for x in logs]
    metadata = []
    for entry in _entries(body, "set_user_metadata"):
        key, value = entry.get("key"), entry.get("value")
        if not isinstance(key, str) or not isinstance(value, str):
            raise TargetResponseError("set_user_metadata: key and base64 value must be strings")
        try:
            text = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise TargetResponseError(
                f"set_user_metadata {key}: value is not base64 text"
            ) from None
        metadata.append({"key": key, "value": text})
    attributes: dict[str, list[str]] = {}
    for entry in _entries(body, "append_attribute"):
        name, values = entry.get("name"), entry.get("value")
        if not isinstance(name, str) or not name:
            raise TargetResponseError("append_attribute: every entry needs a name")
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            raise TargetResponseError(f"append_attribute {name}: value must be a list")
        attributes.setdefault(name, []).extend(str(v) for v in values)
    try:
        return ActionOutput.model_validate(
            {"claims": claims, "metadata": metadata, "saml_attributes": attributes}
        )
    except ValidationError as exc:
        raise TargetResponseError(str(exc.errors()[0]["msg"])) from None
