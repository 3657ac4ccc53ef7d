"""The audit events of one slot's change: which actions were attached, updated (version or
position) and detached, which rollouts started, and which running rollouts ended because
their entry was pinned, replaced or detached."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gatehook.admin.principal import CLAIMED, PRINCIPAL
from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import AuditEvent
from gatehook.domain.model import Attachment

__all__ = ["SlotChange", "new_event", "slot_events"]


def new_event(type_: str, tenant: str, actor: str, **fields: Any) -> AuditEvent:
    """A management audit event (its id new, its time now)."""
    return AuditEvent(
        event_id=uuid.uuid4().hex,
        type=type_,
        tenant=tenant,
        at=datetime.now(UTC),
        actor=actor,
        principal=PRINCIPAL.get(),
        **_with_claimed(fields),
    )


def _with_claimed(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the claimed actor in ``details`` when one was set aside."""
    claimed = CLAIMED.get()
    if claimed is None:
        return fields
    return {**fields, "details": {**(fields.get("details") or {}), "claimed_actor": claimed}}


@dataclass(frozen=True, slots=True)
class SlotChange:
    """Where and by whom a slot changed, and the flow revisions before and after."""

    tenant: str
    flow_type: FlowType
    trigger: Trigger
    actor: str
    revision_before: int | None
    revision: int

    def event(self, type_: str, action: str, version: str, **fields: Any) -> AuditEvent:
        return new_event(
            type_,
            self.tenant,
            self.actor,
            flow_type=self.flow_type.value,
            trigger=self.trigger.value,
            flow_revision=self.revision,
            flow_revision_before=self.revision_before,
            action=action,
            version=version,
            **fields,
        )


def slot_events(
    change: SlotChange,
    before: list[Attachment],
    after: list[Attachment],
    ended: set[str] | frozenset[str] = frozenset(),
) -> list[AuditEvent]:
    """The events that tell ``before`` -> ``after``. ``ended``: actions whose rollout the
    caller ends with its own event (``rollouts.promote``, ``abort``, an automatic rollback)."""
    old = {a.action: (i, a) for i, a in enumerate(before)}
    new = {a.action: (i, a) for i, a in enumerate(after)}
    events = []
    for name, (i, att) in new.items():
        if name not in old:
            events.append(
                change.event("flow.action_attached", name, att.version, details={"position": i})
            )
        elif old[name][1].version != att.version or old[name][0] != i:
            events.append(
                change.event(
                    "flow.action_updated",
                    name,
                    att.version,
                    previous_version=old[name][1].version,
                    details={"position": i, "previous_position": old[name][0]},
                )
            )
    for name, (_, att) in new.items():
        r = att.rollout
        was = old.get(name, (0, None))[1]
        if (
            r is not None
            and r.live
            and (was is None or was.rollout is None or was.rollout.id != r.id)
        ):
            events.append(
                change.event(
                    "flow.rollout_started",
                    name,
                    att.version,
                    details={"rollout": r.model_dump(mode="json")},
                )
            )
    for name, (_, att) in old.items():
        r = att.rollout
        if r is None or not r.live or name in ended:
            continue
        now = new.get(name, (0, None))[1]
        if now is not None and now.rollout is not None and now.rollout.id == r.id:
            continue  # carried over (a reorder, another entry's change)
        # the entry was pinned, replaced or detached while its rollout ran: the canary and
        # the shadow stop, as with rollouts.abort
        events.append(
            change.event(
                "flow.rollout_rolled_back",
                name,
                now.version if now is not None else att.version,
                previous_version=att.version,
                details={
                    "rollout": r.id,
                    "canary": r.canary,
                    "shadow": r.shadow,
                    "state": "aborted",
                    "reason": "replaced" if now is not None else "detached",
                },
            )
        )
    for name, (i, att) in old.items():
        if name not in new:
            events.append(
                change.event("flow.action_detached", name, att.version, details={"position": i})
            )
    return events
