"""Safe change of live flows on the decision path: shadow runs after the reply, recording
requests for replay, and replaying them. Functions over a ``DecisionPath`` (the same
package: they use its caches and its way of running a version)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import ActionOutput, AuditEvent, Outcome, TriggerReply, TriggerRequest
from gatehook.domain.decide import Step, decide, ends_slot
from gatehook.domain.model import ActionVersion, Attachment
from gatehook.domain.replay import ReplayReport
from gatehook.domain.replay import redact as redact_paths
from gatehook.domain.rollout import diff_outputs
from gatehook.errors import BadRequest, GatehookError
from gatehook.service.call import Call
from gatehook.service.encoding import dumps, event_id, loads, summary
from gatehook.service.lookup import FlowLookup
from gatehook.service.ports import Recorder
from gatehook.service.rollouts import RolloutCounter, RolloutKey, ShadowGate

__all__ = ["DecisionPath", "record", "replay", "shadow"]


class DecisionPath(Protocol):
    """What recording, shadows and replay use of the trigger use case (``TriggerService``
    is one): its lookups, how it runs one version, and where it reports."""

    lookup: FlowLookup
    _recorder: Recorder | None
    _shadows: ShadowGate | None
    _rollouts: RolloutCounter | None
    _publish_event: Callable[[AuditEvent], None] | None
    _actor: str

    def _call(
        self, tenant: str, ft: FlowType, tr: Trigger, req: TriggerRequest, deadline: float
    ) -> Call: ...

    async def _run_version(
        self, call: Call, action: str, wanted: str, before: list[Step], *, dry_run: bool = False
    ) -> Step: ...

    async def _execute(
        self,
        call: Call,
        version: ActionVersion,
        remaining: float,
        before: list[Step],
        *,
        dry_run: bool = False,
    ) -> ActionOutput: ...


async def record(
    svc: DecisionPath,
    tenant: str,
    ft: FlowType,
    tr: Trigger,
    payload: bytes,
    reply: TriggerReply,
    redact: list[str],
) -> None:
    """Keep this request (``redact`` paths blanked first) and its decision, for replay."""
    assert svc._recorder is not None
    record = loads(payload)  # the raw request: unknown fields kept, as sent
    record["_reply"] = summary(reply)
    data = dumps(redact_paths(record, redact))
    await svc._recorder.record(tenant, f"{ft.value}.{tr.value}", data)


async def replay(
    svc: DecisionPath,
    tenant: str,
    flow_type: str,
    trigger: str,
    records: AsyncIterator[dict[str, Any]],
    action: str,
    version: str,
    examples: int = 5,
) -> dict[str, Any]:
    """Decide every recorded request again on the slot's current flow with ``action`` at
    ``version``, and count how the decisions would change.

    Nothing is audited or remembered; templates run dry (nothing sent, no rate limit
    counted) and targets are not called (their steps continue, unchanged)."""
    ft, tr = FlowType(flow_type), Trigger(trigger)
    heads = await svc.lookup.heads(tenant)
    head = heads.get(ft)
    flow = await svc.lookup.flow(tenant, ft, head) if head else None
    slot = flow.slot(tr) if flow else []
    if action not in {a.action for a in slot}:
        raise BadRequest(f"{action} is not attached to {flow_type}.{trigger}")
    if await svc.lookup.version(tenant, action, version) is None:
        raise BadRequest(f"{action}@{version} not found")
    report = ReplayReport(examples)
    async for record in records:
        recorded = record.pop("_reply", None) or {}
        try:
            req = TriggerRequest.model_validate(record)
        except ValidationError:
            report.errors += 1
            continue
        call = svc._call(tenant, ft, tr, req, time.monotonic() + 30)
        steps: list[Step] = []
        for att in slot:
            wanted = version if att.action == action else att.version
            step = await svc._run_version(call, att.action, wanted, steps, dry_run=True)
            steps.append(step)
            if ends_slot(step):
                break
        replayed = decide(req.request_id, head, steps, [(a.action, a.version) for a in slot])
        report.add(req.request_id, recorded, summary(replayed))
    return report.as_dict()


def shadow(svc: DecisionPath, call: Call, att: Attachment, live: Step) -> None:
    """Run the rollout's shadow version on the same input, after the reply, within the
    shadow bound; audit what it would have changed (``flow.action_shadowed``)."""
    r = att.rollout
    if r is None or r.shadow is None or svc._shadows is None:
        return
    shadow_version = r.shadow
    key = RolloutKey(call.tenant, call.flow_type.value, call.trigger.value, att.action, r.id)

    async def run() -> None:
        version = await svc.lookup.version(call.tenant, att.action, shadow_version)
        started = time.perf_counter()
        output: ActionOutput | None = None
        error: str | None = None
        if version is None:
            error = f"version {att.action}@{shadow_version} not found"
        else:
            own = Call(
                call.tenant,
                call.flow_type,
                call.trigger,
                call.req,
                time.monotonic() + version.timeout_ms / 1000,
                _prefix=call.input_prefix,  # built once for the live run and the shadow
            )
            try:
                output = await svc._execute(
                    own, version, version.timeout_ms / 1000, [], dry_run=True
                )
            except GatehookError as exc:
                error = f"{getattr(exc, 'kind', exc.code)}: {exc.message}"
        diff = diff_outputs(live.output, live.error, output, error)
        if svc._rollouts is not None:
            svc._rollouts.shadowed(key, diff["kinds"])
        if svc._publish_event is None:
            return
        shadow_outcome = "error" if output is None else output.kind
        svc._publish_event(
            AuditEvent(
                event_id=event_id(
                    call.tenant,
                    call.flow_type.value,
                    call.trigger.value,
                    call.req.request_id,
                    -1,
                    f"shadow:{att.action}@{shadow_version}",
                ),
                type="flow.action_shadowed",
                tenant=call.tenant,
                at=datetime.now(UTC),
                actor=svc._actor,
                flow_type=call.flow_type.value,
                trigger=call.trigger.value,
                action=att.action,
                version=shadow_version,
                previous_version=live.version,
                request_id=call.req.request_id,
                signin_id=call.req.signin_id,
                outcome=Outcome(shadow_outcome),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                error=error,
                details={
                    "rollout": r.id,
                    "live": {"version": live.version, "outcome": live.outcome().value},
                    "shadow": {"version": shadow_version, "outcome": shadow_outcome},
                    "diff": diff,
                },
            )
        )

    svc._shadows.submit(run)
