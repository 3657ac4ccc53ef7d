"""The AsyncAPI document of gatehook's subjects, for ``schemas/asyncapi.json``.

Built from a documentation-only FastStream broker (never connected) whose subscribers and
publishers carry the contract models, so the document shows the payloads of every subject,
including the trigger subject that the workers serve on the lean path.
"""

from __future__ import annotations

import json
from typing import Any

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from gatehook import __version__
from gatehook.admin.requests import OPERATIONS
from gatehook.domain import subjects
from gatehook.domain.contract import AuditEvent, DecisionRecord, TriggerReply, TriggerRequest

__all__ = ["asyncapi_document"]


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    broker = NatsBroker("nats://localhost:4222")
    reply = broker.publisher(
        "_INBOX.reply",
        title="trigger reply",
        schema=TriggerReply,
        description="The reply to a trigger request (to the request's reply inbox).",
    )

    @reply
    @broker.subscriber(
        subjects.TRIGGER_FORM,
        queue="gatehook-workers",
        title="trigger",
        description="A login service asks for a decision at a trigger point (request-reply).",
    )
    async def trigger(body: TriggerRequest) -> TriggerReply:  # pragma: no cover - docs only
        raise NotImplementedError

    for op, model in OPERATIONS.items():

        @broker.subscriber(
            subjects.ADMIN_FORM.replace("{operation}", op),
            queue="gatehook-workers",
            title=f"admin {op}",
            description=f"Management API: {op} (request-reply; tenant from the subject).",
        )
        async def admin(body: model) -> dict[str, Any]:  # type: ignore[valid-type]  # pragma: no cover
            raise NotImplementedError

    audit = broker.publisher(
        subjects.AUDIT_FORM,
        title="audit",
        schema=AuditEvent,
        description="Management events on JetStream stream GATEHOOK_AUDIT"
        " (Nats-Msg-Id = event_id); every event but flow.action_executed, whose runs a"
        " decision record carries.",
    )
    decided = broker.publisher(
        subjects.DECIDED_FORM,
        title="decision record",
        schema=DecisionRecord,
        description="One per decision, on GATEHOOK_AUDIT (Nats-Msg-Id = record_id), stored"
        " before the reply: the reply and every action run (executions), each run the"
        " fields of a flow.action_executed event.",
    )
    changes = broker.publisher(
        subjects.CHANGES_FORM,
        title="changes",
        description="Broadcast after a flow change; every worker drops its cached flow heads.",
    )
    _ = (audit, decided, changes)
    spec = AsyncAPI(
        broker,
        title="gatehook",
        version=__version__,
        description="Actions at the trigger points of sign-in flows.",
    )
    return dict(json.loads(spec.to_specification().to_json()))
