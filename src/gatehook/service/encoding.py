"""Encoding on the decision path, done once and by hand where it is hot: JSON with orjson,
audit event ids, readable validation errors, the decision record, what a disabled action
says instead, and what a replay compares."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gatehook.domain.contract import DECIDED, ActionOutput, TriggerReply
from gatehook.domain.decide import Step, reply_of
from gatehook.domain.model import Disabled
from gatehook.service.ports import EncodedEvent

__all__ = [
    "dumps",
    "encode_record",
    "encode_reply",
    "event_id",
    "fallback",
    "loads",
    "reply_of_record",
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


def encode_record(
    key: str,
    tenant: str,
    flow_type: str,
    trigger: str,
    request_id: str,
    signin_id: str | None,
    user_id: str | None,
    actor: str,
    revision: int | None,
    steps: list[Step],
    fields: dict[str, Any],
    reply: bytes,
    pin_deferred: bool = False,
) -> EncodedEvent:
    """The decision record (``DecisionRecord``'s fields in its order: a unit test compares
    the two), with ``reply`` (the reply's JSON, encoded once) inside as it is; its message
    id is the request's key, so that the stream tells a retry it is one."""
    executions = [
        {
            "event_id": event_id(
                tenant, flow_type, trigger, request_id, index, f"{step.name}@{step.version}"
            ),
            "action": step.name,
            "version": step.version,
            "outcome": step.outcome().value,
            "duration_ms": round(step.duration_ms, 3),
            "error": step.error,
        }
        for index, step in enumerate(steps)
    ]
    record = {
        "record_id": key,
        "type": DECIDED,
        "tenant": tenant,
        "at": datetime.now(UTC),
        "actor": actor,
        "flow_type": flow_type,
        "trigger": trigger,
        "flow_revision": revision,
        "request_id": request_id,
        "signin_id": signin_id,
        "user_id": user_id,
        "decision": fields["decision"],
        "reason": fields["reason"],
        "pin_deferred": pin_deferred,
        "executions": executions,
        "reply": orjson.Fragment(reply),
    }
    return EncodedEvent(tenant, DECIDED, key, orjson.dumps(record, option=orjson.OPT_UTC_Z))


def reply_of_record(record: bytes) -> bytes:
    """The reply a stored decision record holds (what a retry of its request gets)."""
    return orjson.dumps(orjson.loads(record)["reply"])


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
