"""Safe change of live flows on the decision path: shadow runs after the reply, recording
requests for replay, and replaying them, with the decision path's own lookups and way of
running a version (``service.execution.ActionRunner``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import ActionOutput, AuditEvent, Outcome, TriggerReply, TriggerRequest
from gatehook.domain.decide import Step, decide, ends_slot
from gatehook.domain.model import Attachment
from gatehook.domain.replay import ReplayReport
from gatehook.domain.replay import redact as redact_paths
from gatehook.domain.rollout import diff_outputs
from gatehook.errors import BadRequest, GatehookError
from gatehook.service.call import Call
from gatehook.service.encoding import dumps, event_id, loads, summary
from gatehook.service.execution import ActionRunner
from gatehook.service.ports import Recorder
from gatehook.service.rollouts import RolloutCounter, RolloutKey, ShadowGate

__all__ = ["SafeChange"]


class SafeChange:
    """Recording, replay and shadow runs over the decision path's ``ActionRunner`` (see
    the module)."""

    def __init__(
        self,
        runner: ActionRunner,
        *,
        actor: str,
        recorder: Recorder | None = None,
        shadows: ShadowGate | None = None,
        rollouts: RolloutCounter | None = None,
        publish_event: Callable[[AuditEvent], None] | None = None,
    ) -> None:
        self._runner = runner
        self._lookup = runner.lookup
        self._actor = actor
        self._recorder = recorder
        self._shadows = shadows
        self._rollouts = rollouts
        self._publish_event = publish_event

    @property
    def records(self) -> bool:
        """Whether requests can be recorded here (a recorder is set)."""
        return self._recorder is not None

    async def record(
        self,
        tenant: str,
        ft: FlowType,
        tr: Trigger,
        payload: bytes,
        reply: TriggerReply,
        redact: list[str],
    ) -> None:
        """Keep this request (``redact`` paths blanked first) and its decision, for replay."""
        assert self._recorder is not None
        record = loads(payload)  # the raw request: unknown fields kept, as sent
        record["_reply"] = summary(reply)
        data = dumps(redact_paths(record, redact))
        await self._recorder.record(tenant, f"{ft.value}.{tr.value}", data)

    async def replay(
        self,
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
        heads = await self._lookup.heads(tenant)
        head = heads.get(ft)
        flow = await self._lookup.flow(tenant, ft, head) if head else None
        slot = flow.slot(tr) if flow else []
        if action not in {a.action for a in slot}:
            raise BadRequest(f"{action} is not attached to {flow_type}.{trigger}")
        if await self._lookup.version(tenant, action, version) is None:
            raise BadRequest(f"{action}@{version} not found")
        report = ReplayReport(examples)
        async for record in records:
            recorded = record.pop("_reply", None) or {}
            try:
                req = TriggerRequest.model_validate(record)
            except ValidationError:
                report.errors += 1
                continue
            call = Call(tenant, ft, tr, req, time.monotonic() + 30)
            steps: list[Step] = []
            for att in slot:
                wanted = version if att.action == action else att.version
                step = await self._runner.run_version(call, att.action, wanted, steps, dry_run=True)
                steps.append(step)
                if ends_slot(step):
                    break
            replayed = decide(req.request_id, head, steps, [(a.action, a.version) for a in slot])
            report.add(req.request_id, recorded, summary(replayed))
        return report.as_dict()

    def shadow(self, call: Call, att: Attachment, live: Step) -> None:
        """Run the rollout's shadow version on the same input, after the reply, within the
        shadow bound; audit what it would have changed (``flow.action_shadowed``)."""
        r = att.rollout
        if r is None or r.shadow is None or self._shadows is None:
            return
        shadow_version = r.shadow
        key = RolloutKey(call.tenant, call.flow_type.value, call.trigger.value, att.action, r.id)

        async def run() -> None:
            version = await self._lookup.version(call.tenant, att.action, shadow_version)
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
                    output = await self._runner.execute(
                        own, version, version.timeout_ms / 1000, [], dry_run=True
                    )
                except GatehookError as exc:
                    error = f"{getattr(exc, 'kind', exc.code)}: {exc.message}"
            diff = diff_outputs(live.output, live.error, output, error)
            if self._rollouts is not None:
                self._rollouts.shadowed(key, diff["kinds"])
            if self._publish_event is None:
                return
            shadow_outcome = "error" if output is None else output.kind
            self._publish_event(
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
                    actor=self._actor,
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

        self._shadows.submit(run)
