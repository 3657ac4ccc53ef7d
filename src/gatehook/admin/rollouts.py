"""Safe change of live flows, the management side: the kill switch, and a rollout's end
(promoted, rolled back, aborted) and status. See docs/contract.md, "Slot entries with a
rollout" and "Kill switch".

Every change is a write plus its audit event plus the change broadcast, as for every other
management change; a rollout's end is a new flow revision, serialised as every flow change
is (a unique revision number: of two workers rolling back the same canary at once, one
commits and the other finds it done).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from gatehook.admin.service import AdminService, _slot
from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.model import Attachment, Disabled, FlowRevision, Rollout, RolloutState
from gatehook.errors import Conflict, NotFound, ValidationFailed
from gatehook.service.rollouts import RolloutKey

__all__ = ["RolloutAdmin"]

log = logging.getLogger("gatehook")

Fallback = Literal["continue", "block"]
_EVENT = {
    "promoted": "flow.rollout_promoted",
    "rolled_back": "flow.rollout_rolled_back",
    "aborted": "flow.rollout_rolled_back",
}


class RolloutAdmin:
    """Kill switch and rollout use cases over ``AdminService``'s store, audit and broadcast."""

    def __init__(self, service: AdminService) -> None:
        self._service = service
        self._store = service.store

    async def roll_back(self, key: RolloutKey, runs: int, failures: int, *, actor: str) -> None:
        """A canary passed its failure limit (``service.rollouts``): its slot goes back to
        the stable version, with the counts in the audit event."""
        log.warning(
            "rolling back the canary of %s in %s.%s (%s): %d of %d runs failed",
            key.action,
            key.flow_type,
            key.trigger,
            key.tenant,
            failures,
            runs,
        )
        await self.end(
            key.tenant,
            key.flow_type,
            key.trigger,
            key.action,
            "rolled_back",
            actor=actor,
            rollout_id=key.rollout,
            details={"runs": runs, "failures": failures, "failure_rate": round(failures / runs, 4)},
        )

    # -- kill switch -------------------------------------------------------------------------
    async def disable(
        self, tenant: str, name: str, *, reason: str, fallback: Fallback, actor: str
    ) -> Disabled:
        """Turn an action off everywhere: where it is attached, ``fallback`` decides instead
        (outcome ``disabled``). Audited ``flow.action_disabled``; every worker within 1 s."""
        await self._service.action(tenant, name)
        switch = Disabled(reason=reason, fallback=fallback, actor=actor, at=datetime.now(UTC))
        event = self._service.event(
            "flow.action_disabled",
            tenant,
            actor,
            action=name,
            details={"reason": reason, "fallback": fallback},
        )
        await self._service.set_disabled(tenant, name, switch, event)
        return switch

    async def enable(self, tenant: str, name: str, *, reason: str, actor: str) -> None:
        """Turn the kill switch off again. Audited ``flow.action_enabled``."""
        event = self._service.event(
            "flow.action_enabled", tenant, actor, action=name, details={"reason": reason}
        )
        await self._service.set_disabled(tenant, name, None, event)

    # -- rollouts ----------------------------------------------------------------------------
    async def start(
        self,
        tenant: str,
        flow_type: str,
        trigger: str,
        action: str,
        *,
        canary: str | None,
        percent: int,
        shadow: str | None,
        error_rate: float,
        min_runs: int,
        actor: str,
    ) -> FlowRevision | None:
        """Start a canary (``percent`` of sign-ins, rolled back past ``error_rate`` after
        ``min_runs``) and/or a shadow on the slot entry of ``action``: a new revision, audited
        ``flow.rollout_started``, as the same entry in a flows file would."""
        ft, tr = _slot(flow_type, trigger)
        if canary is None and shadow is None:
            raise ValidationFailed("give a canary or a shadow version", field="canary")
        if canary is not None and percent <= 0:
            raise ValidationFailed("a canary needs a percent above 0", field="percent")
        current = await self._store.latest_flow(tenant, ft)
        entries = current.slot(tr) if current else []
        found = next((a for a in entries if a.action == action), None)
        if found is None:
            raise NotFound(f"{action} is not attached at {flow_type}.{trigger}")
        if found.rollout is not None and found.rollout.live:
            raise Conflict(f"{action} has a rollout running at {flow_type}.{trigger}")
        for role, version in (("canary", canary), ("shadow", shadow)):
            if version is None:
                continue
            if version == found.version:
                raise ValidationFailed(f"the {role} is the stable version {version}", field=role)
            if await self._store.get_version(tenant, action, version) is None:
                raise NotFound(f"version {version} of {action} not found")
        rollout = Rollout(
            id=uuid.uuid4().hex,
            canary=canary,
            percent=percent if canary else 0,
            error_rate=error_rate,
            min_runs=min_runs,
            shadow=shadow,
            started_at=datetime.now(UTC),
        )
        wanted = [
            Attachment(action=a.action, version=a.version, rollout=rollout)
            if a.action == action
            else a
            for a in entries
        ]
        return await self._service.set_slot(tenant, flow_type, trigger, wanted, actor=actor)

    async def end(
        self,
        tenant: str,
        flow_type: str,
        trigger: str,
        action: str,
        state: RolloutState,
        *,
        actor: str,
        rollout_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> FlowRevision | None:
        """End the running rollout of ``action`` in the slot: ``promoted`` (the canary becomes
        the stable version), ``rolled_back`` or ``aborted`` (the stable version alone runs).
        None when it has ended already (or is another rollout than ``rollout_id``)."""
        ft, tr = _slot(flow_type, trigger)
        for _ in range(5):  # a concurrent change took the revision number: read and retry
            current = await self._store.latest_flow(tenant, ft)
            entries = current.slot(tr) if current else []
            found = next((a for a in entries if a.action == action), None)
            if found is None or found.rollout is None:
                if rollout_id is None:
                    raise NotFound(f"no rollout of {action} in {flow_type}.{trigger}")
                return None
            r = found.rollout
            if not r.live or (rollout_id is not None and r.id != rollout_id):
                if rollout_id is None:
                    raise ValidationFailed(f"the rollout of {action} has ended ({r.state})")
                return None
            if state == "promoted" and r.canary is None:
                raise ValidationFailed(f"the rollout of {action} has no canary to promote")
            if state == "promoted":
                new = Attachment(action=action, version=r.canary or found.version)
            else:
                new = found.model_copy(update={"rollout": r.model_copy(update={"state": state})})
            slots = dict(current.slots) if current else {}
            slots[tr] = [new if a.action == action else a for a in entries]
            event = self._service.event(
                _EVENT[state],
                tenant,
                actor,
                flow_type=ft.value,
                trigger=tr.value,
                action=action,
                version=new.version,
                previous_version=found.version,
                details={
                    "rollout": r.id,
                    "canary": r.canary,
                    "shadow": r.shadow,
                    "state": state,
                    **(details or {}),
                },
            )
            try:
                return await self._service.commit_slots(
                    tenant, ft, current, slots, actor, f"rollout {state}", {}, [event]
                )
            except Conflict:
                continue
        raise Conflict("the flow kept changing; try again")

    async def status(
        self, tenant: str, flow_type: str | None = None, trigger: str | None = None
    ) -> list[dict[str, Any]]:
        """Every rollout in the tenant's current flows (or one slot), running or ended, with
        the runs and failure rates of both versions and the shadow runs that differed."""
        rows: list[tuple[FlowType, Trigger, Attachment, Rollout]] = []
        types = [_slot(flow_type, trigger)[0]] if flow_type and trigger else list(FlowType)
        for ft in types:
            flow = await self._store.latest_flow(tenant, ft)
            for tr, entries in (flow.slots if flow else {}).items():
                if trigger and tr.value != trigger:
                    continue
                rows += [(ft, tr, a, a.rollout) for a in entries if a.rollout is not None]
        totals = await self._store.rollout_totals(tenant, [r.id for *_, r in rows])
        out = []
        for ft, tr, att, r in rows:
            counts = totals.get(r.id, {})

            def role(name: str, counts: dict[str, Any] = counts) -> dict[str, Any]:
                c = counts.get(name) or {"runs": 0, "failures": 0, "differed": {}}
                runs = c["runs"]
                return {
                    "runs": runs,
                    "failures": c["failures"],
                    "failure_rate": round(c["failures"] / runs, 4) if runs else None,
                    **({"differed": c["differed"]} if name == "shadow" else {}),
                }

            shadow = role("shadow")
            out.append(
                {
                    "slot": f"{ft.value}.{tr.value}",
                    "action": att.action,
                    "stable": att.version,
                    "canary": r.canary,
                    "shadow": r.shadow,
                    "percent": r.percent,
                    "rollback": {"error_rate": r.error_rate, "min_runs": r.min_runs},
                    "state": r.state,
                    "rollout": r.id,
                    "started_at": r.started_at.isoformat() if r.started_at else None,
                    "runs": {"stable": role("stable"), "canary": role("canary")},
                    "shadow_runs": {
                        "runs": shadow["runs"],
                        "differed": shadow.get("differed", {}).get("any", 0),
                        "differed_share": round(
                            shadow.get("differed", {}).get("any", 0) / shadow["runs"], 4
                        )
                        if shadow["runs"]
                        else None,
                        "by_kind": {
                            k: v for k, v in shadow.get("differed", {}).items() if k != "any"
                        },
                    },
                }
            )
        return out
