"""Encoding on the decision path, done once and by hand where it is hot: JSON with orjson,
audit event ids, readable validation errors, the audit events of a decision, what a disabled
action says instead, and what a replay compares."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gatehook.domain.contract import ActionOutput, TriggerReply
from gatehook.domain.decide import Step, reply_of
from gatehook.domain.model import Disabled
from gatehook.service.ports import EncodedEvent

__all__ = [
    "dumps",
    "encode_executions",
    "encode_reply",
    "event_id",
    "fallback",
    "loads",
    "request_id_of",
    "summary",
    "validation_message",
]


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """A short, readable account of what is wrong with a request body."""
    parts = []
    for err in exc.errors()[:limit]:
        if err["type"] == "json_invalid":
            return f"body is not valid JSON: {err['msg']}"
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def event_id(
    tenant: str, flow_type: str, trigger: str, request_id: str, index: int, ref: str
) -> str:
    """The audit event id of one attachment's execution for one request: stable across retries."""
    raw = f"{tenant}\n{flow_type}\n{trigger}\n{request_id}\n{index}\n{ref}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def dumps(value: Any) -> bytes:
    """Compact JSON; orjson on the hot path, the standard library for what orjson refuses
    (integers beyond 64 bits, which a request may carry in its free-form fields)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str).encode()


def loads(data: bytes) -> Any:
    """``dumps`` reversed: orjson, and the standard library for what orjson refuses."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def request_id_of(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("request_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def summary(reply: TriggerReply) -> dict[str, Any]:
    """What a replay compares of a decision."""
    return {
        "decision": reply.decision.value if reply.decision else None,
        "reason": reply.reason,
        "claims": reply.claims,
        "metadata": [m.model_dump(mode="json") for m in reply.metadata],
        "user_updates": reply.user_updates,
        "actions": [f"{a.name}@{a.version}" for a in reply.actions],
    }


def fallback(action: str, switch: Disabled) -> ActionOutput:
    """What a disabled action's slot entry says instead of running it."""
    if switch.fallback == "block":
        reason = f": {switch.reason}" if switch.reason else ""
        return ActionOutput(
            kind="block", reason="action_disabled", message=f"action {action} is disabled{reason}"
        )
    return ActionOutput()


def encode_executions(
    tenant: str,
    flow_type: str,
    trigger: str,
    request_id: str,
    signin_id: str | None,
    actor: str,
    revision: int | None,
    steps: list[Step],
    details: dict[str, Any] | None = None,
) -> list[EncodedEvent]:
    """``flow.action_executed`` per step, encoded once, with ``AuditEvent``'s fields in its
    order (a unit test compares the two)."""
    if not steps:
        return []
    at = datetime.now(UTC)
    subject = f"gatehook.v1.audit.{tenant}.flow.action_executed"
    out = []
    for index, step in enumerate(steps):
        eid = event_id(tenant, flow_type, trigger, request_id, index, f"{step.name}@{step.version}")
        event = {
            "event_id": eid,
            "type": "flow.action_executed",
            "tenant": tenant,
            "at": at,
            "actor": actor,
            "principal": None,  # (set on management events only)
            "flow_type": flow_type,
            "trigger": trigger,
            "flow_revision": revision,
            "flow_revision_before": None,
            "action": step.name,
            "version": step.version,
            "previous_version": None,
            "request_id": request_id,
            "signin_id": signin_id,
            "outcome": step.outcome().value,
            "duration_ms": round(step.duration_ms, 3),
            "error": step.error,
            "details": details or {},
        }
        out.append(EncodedEvent(subject, eid, dumps(event)))
    return out


def _model_json(value: Any) -> Any:
    if isinstance(value, BaseModel):  # metadata entries and grants from validated outputs
        return value.model_dump(mode="json")
    raise TypeError


def encode_reply(fields: dict[str, Any]) -> bytes:
    """The reply ``reply_fields`` describes, as ``TriggerReply``'s own JSON would be (a
    property test compares them byte for byte), encoded by orjson without building the
    models; through the models when orjson refuses a value (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(fields, default=_model_json)
    except TypeError:
        return reply_of(fields).model_dump_json().encode()
