"""The trigger use case: a request at a trigger point in, a decision out, every run audited.

    parse + validate -> flow revision (pinned per sign-in)
    -> run the slot's attachments in order (templates in-process, scripts in the sandbox)
    -> decide() -> journal: the decision record (the reply and every action run), one
       message, acknowledged (a retry learns here that it is one) -> reply

The transport hands this module bytes and gets bytes back; it knows nothing of NATS.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gatehook.domain.catalogue import FlowType, Trigger, slot_of, slot_problem, tenant_problem
from gatehook.domain.contract import (
    ActionOutput,
    AuditEvent,
    ErrorCode,
    TriggerReply,
    TriggerRequest,
)
from gatehook.domain.decide import Step, ends_slot, reply_fields, reply_of
from gatehook.domain.model import (
    ActionKind,
    ActionVersion,
    Attachment,
)
from gatehook.domain.rollout import in_canary
from gatehook.errors import (
    BadRequest,
    GatehookError,
    ScriptError,
)
from gatehook.process.deadlines import Deadlines
from gatehook.service.action_cache import ActionCaches
from gatehook.service.cache import Lru
from gatehook.service.call import Call
from gatehook.service.encoding import (
    encode_record,
    encode_reply,
    event_id,
    fallback,
    reply_of_record,
    request_id_of,
    validation_message,
)
from gatehook.service.execution import ActionRunner, script_output, since_ms
from gatehook.service.fairness import TenantLimiter
from gatehook.service.lookup import FlowLookup
from gatehook.service.ports import (
    EncodedEvent,
    FlowSource,
    Journal,
    Recorder,
    ScriptRunner,
    TargetRunner,
    Telemetry,
)
from gatehook.service.rollouts import RolloutCounter, RolloutKey, ShadowGate
from gatehook.service.safe_change import SafeChange
from gatehook.settings import Settings
from gatehook.templates.base import TemplateServices
from gatehook.templates.registry import TemplateRegistry
from gatehook.tracing import action_span, request_span, tracing_enabled

__all__ = ["TriggerService", "event_id", "validation_message"]

log = logging.getLogger("gatehook.trigger")


@dataclass(frozen=True, slots=True)
class TryRun:
    """A dry run of one action version: its output or error, its logs, how long it took."""

    output: ActionOutput | None
    error: str | None
    logs: list[str]
    duration_ms: float


class TriggerService:
    """Answers trigger requests. Stateless but for caches; many may run concurrently."""

    def __init__(
        self,
        *,
        flows: FlowSource,
        scripts: ScriptRunner,
        templates: TemplateRegistry,
        journal: Journal,
        settings: Settings,
        deadlines: Deadlines,
        services: TemplateServices | None = None,
        telemetry: Telemetry | None = None,
        targets: TargetRunner | None = None,
        rollouts: RolloutCounter | None = None,
        shadows: ShadowGate | None = None,
        publish_event: Callable[[AuditEvent], None] | None = None,
        recorder: Recorder | None = None,
        action_cache: ActionCaches | None = None,
    ) -> None:
        self._rollouts = rollouts
        self._journal = journal
        self._settings = settings
        self._telemetry = telemetry or Telemetry()
        self._actor = settings.worker_name
        self.lookup = FlowLookup(flows, templates, settings)
        # replies given here lately, by key, with when they stop counting as the same request:
        # the streams' duplicate window, which answers a retry that reaches another worker
        self._window_s = settings.audit.duplicate_window_s
        self._recent: Lru[str, tuple[float, bytes]] = Lru(10_000)
        self.active: set[str] = set()  # tenants seen since the last activity report
        self.handled = 0  # requests answered by this instance (operations, load-sharing tests)
        sandbox = settings.sandbox
        floor = sandbox.per_tenant_concurrency or max(1, sandbox.pool_size - 1)
        self.runner = ActionRunner(
            lookup=self.lookup,
            scripts=scripts,
            templates=templates,
            deadlines=deadlines,
            fairness=TenantLimiter(floor, ceiling=max(floor, 64), slow_s=0.05, deadlines=deadlines),
            services=services,
            targets=targets,
            action_cache=action_cache,
        )
        self.safe_change = SafeChange(
            self.runner,
            actor=self._actor,
            recorder=recorder,
            shadows=shadows,
            rollouts=rollouts,
            publish_event=publish_event,
        )

    # -- cache control -----------------------------------------------------------------------
    def invalidate(self, tenant: str) -> None:
        """A change was broadcast for ``tenant``: reload its current revisions on next use."""
        self.lookup.invalidate(tenant)

    def cache_stats(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) of each hot-path cache."""
        return {
            **self.lookup.cache_stats(),
            "recent_replies": (self._recent.hits, self._recent.misses),
        }

    # -- entry point -------------------------------------------------------------------------
    async def handle(
        self,
        tenant: str,
        flow_type: str,
        trigger: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Answer one trigger request (the subject's parts and the raw body) with reply JSON.

        Never raises: every failure becomes an error reply that says what went wrong.
        ``headers`` (NATS message headers) may carry a ``traceparent`` to continue a trace.
        """
        if not tracing_enabled():
            return (await self._answer(tenant, flow_type, trigger, payload))[0]
        attributes = {
            "gatehook.tenant": tenant,
            "gatehook.flow_type": flow_type,
            "gatehook.trigger": trigger,
        }
        with request_span(headers, attributes) as span:
            body, outcome = await self._answer(tenant, flow_type, trigger, payload)
            if span is not None:
                span.set_attribute("gatehook.outcome", outcome)
            return body

    async def _answer(
        self, tenant: str, flow_type: str, trigger: str, payload: bytes
    ) -> tuple[bytes, str]:
        started = time.monotonic()
        self.handled += 1
        outcome = "internal"
        reply: TriggerReply | bytes
        try:
            result = await self._handle(tenant, flow_type, trigger, payload, started)
            if isinstance(result, TriggerReply):
                reply = result
            else:
                reply, outcome = result
        except GatehookError as exc:
            code: ErrorCode = "internal"
            if exc.code == "unavailable":
                code = "unavailable"
            elif isinstance(exc, BadRequest):
                code = "bad_request"
            reply = TriggerReply.failure(
                request_id_of(payload), code, exc.message, retryable=exc.retryable
            )
            outcome = code
        except Exception:
            log.exception(
                "internal error answering a trigger request",
                extra={
                    "tenant": tenant,
                    "flow_type": flow_type,
                    "trigger": trigger,
                    "request_id": request_id_of(payload),
                },
            )
            reply = TriggerReply.failure(
                request_id_of(payload), "internal", "internal error", retryable=True
            )
        if isinstance(reply, TriggerReply) and reply.error is not None:
            outcome = reply.error.code
        self._telemetry.request(tenant, flow_type, trigger, outcome, time.monotonic() - started)
        if isinstance(reply, bytes):
            return reply, outcome
        return reply.model_dump_json().encode(), outcome

    async def _handle(
        self, tenant: str, flow_type: str, trigger: str, payload: bytes, started: float
    ) -> TriggerReply | tuple[bytes, str]:
        """A reply refusing the request, or (reply JSON, what was decided) for the metrics."""
        problem = tenant_problem(tenant)
        if problem is not None:
            return self._bad(payload, problem)
        members = slot_of(flow_type, trigger)
        if members is None:
            return self._bad(payload, (slot_problem(flow_type, trigger) or ("", ""))[1])
        if len(payload) > self._settings.max_payload_bytes:
            return self._bad(
                payload,
                f"payload is {len(payload)} bytes; the limit is {self._settings.max_payload_bytes}",
            )
        try:
            req = TriggerRequest.model_validate_json(payload)
        except ValidationError as exc:
            return self._bad(payload, validation_message(exc))
        except (ValueError, RecursionError) as exc:
            return self._bad(payload, f"body cannot be read: {exc}")
        ft, tr = members

        key = self._reply_key(tenant, flow_type, trigger, req.request_id)
        recent = self._recent.get(key)
        if recent is not None and recent[0] > started:  # a retry that came back to this worker
            return recent[1], "replayed"

        budget = self._settings.request_budget_ms
        if req.deadline_ms is not None:
            budget = min(budget, req.deadline_ms)
        final = started + budget / 1000
        reserve = min(0.1, budget / 1000 * 0.2)  # kept for audit acks and the reply itself

        self.active.add(tenant)
        # cached on the warm path; a cold tenant's reads wait their turn (GATEHOOK_COLD_READS)
        # and give up, retryably, when they would overrun the request's deadline
        revision, flow, pin_deferred = await self.lookup.resolve(
            tenant, ft, req.signin_id, final - reserve
        )
        attachments = flow.slot(tr) if flow is not None else []

        call = Call(tenant, ft, tr, req, final - reserve)
        call.disabled = self.lookup.disabled(tenant)
        if len(attachments) > 1:
            self.runner.start_pure_scripts(call, attachments)
        steps: list[Step] = []
        traced = tracing_enabled()
        for att in attachments:
            if traced:
                with action_span(att.action, att.version) as span:
                    step = await self._run(call, att, steps)
                    if span is not None:
                        span.set_attribute("gatehook.outcome", step.outcome().value)
            else:
                step = await self._run(call, att, steps)
            steps.append(step)
            kind = step.error.split(":", 1)[0] if step.error else None
            self._telemetry.action(tenant, step.name, step.version, step.outcome().value, kind)
            if ends_slot(step):
                break
        fields = reply_fields(
            req.request_id, revision, steps, [(a.action, a.version) for a in attachments]
        )
        if pin_deferred:
            fields["pin_deferred"] = True
        body = encode_reply(fields)
        # One decision record, the reply inside it and every action run, stored before the
        # reply is given. A retry learns here that it is one, and gets the reply given the
        # first time.
        published = time.monotonic()
        try:
            stored = self._journal.record(
                self._record(call, key, revision, steps, fields, body, pin_deferred),
                max(final, published + 0.01),
            )
            earlier = await stored
        except GatehookError:
            self._telemetry.audit(time.monotonic() - published, ok=False)
            raise
        self._telemetry.audit(time.monotonic() - published, ok=True)
        outcome = str(fields["decision"])
        if earlier is not None:
            body, outcome = reply_of_record(earlier), "replayed"
        self._recent.put(key, (started + self._window_s, body))
        for att, live in call.shadows:  # after the reply is stored: never delays it
            self.safe_change.shadow(call, att, live)
        redact = self.lookup.recorded(tenant, f"{flow_type}.{trigger}")
        if redact is not None and self.safe_change.records and earlier is None:
            await self.safe_change.record(tenant, ft, tr, payload, reply_of(fields), redact)
        return body, outcome

    def _bad(self, payload: bytes, message: str) -> TriggerReply:
        return TriggerReply.failure(request_id_of(payload), "bad_request", message)

    @staticmethod
    def _reply_key(tenant: str, flow_type: str, trigger: str, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:40]
        return f"{tenant}.{flow_type}.{trigger}.{digest}"

    # -- running one attachment ----------------------------------------------------------
    async def _run(self, call: Call, att: Attachment, before: list[Step]) -> Step:
        switch = call.disabled.get(att.action)
        if switch is not None:  # the kill switch: the fallback decides, nothing runs
            return Step(att.action, att.version, output=fallback(att.action, switch), disabled=True)
        wanted, role = att.version, None
        r = att.rollout
        if r is not None and r.live and r.id in await self._live_rollouts(call):
            role = "stable"
            sticky = call.req.signin_id or call.req.request_id
            if r.canary is not None and in_canary(r.id, sticky, r.percent):
                wanted, role = r.canary, "canary"
        step = await self.runner.run_version(call, att.action, wanted, before)
        if role is not None and r is not None:
            key = RolloutKey(
                call.tenant, call.flow_type.value, call.trigger.value, att.action, r.id
            )
            if self._rollouts is not None:
                self._rollouts.count(key, role, failed=step.output is None)
                if r.canary is not None:
                    self._rollouts.watch(key, r)
            if r.shadow is not None:
                call.shadows.append((att, step))
        return step

    async def _live_rollouts(self, call: Call) -> set[str]:
        """Rollouts running in the tenant's current flow: a sign-in pinned to an older
        revision stops running a canary as soon as it has been rolled back."""
        if call.live_rollouts is None:
            head = (await self.lookup.heads(call.tenant, call.deadline)).get(call.flow_type)
            flow = (
                await self.lookup.flow(call.tenant, call.flow_type, head, call.deadline)
                if head
                else None
            )
            call.live_rollouts = {
                a.rollout.id
                for a in (flow.slot(call.trigger) if flow else [])
                if a.rollout is not None and a.rollout.live
            }
        return call.live_rollouts

    async def try_version(
        self, tenant: str, flow_type: str, trigger: str, req: TriggerRequest, version: ActionVersion
    ) -> TryRun:
        """Run one stored ``version`` on ``req`` as its flow slot would, and keep its logs.

        A dry run for the console's and the admin API's test box: no audit event, no reply
        record, no decision for a sign-in. The action itself runs for real (a webhook
        template sends, a rate limit counts).
        """
        call = Call(
            tenant,
            FlowType(flow_type),
            Trigger(trigger),
            req,
            time.monotonic() + version.timeout_ms / 1000 + 0.5,
        )
        started = time.perf_counter()
        logs: list[str] = []
        try:
            if version.kind in (ActionKind.TEMPLATE, ActionKind.TARGET):
                output = await self.runner.execute(call, version, version.timeout_ms / 1000, [])
            else:
                job = self.runner.job(call, version, self.lookup.config(version)[1])
                run = await self.runner.scripts.run(job)
                logs = run.logs
                output = script_output(run.output)
        except ScriptError as exc:
            error = f"{exc.kind}: {exc.message}"
            return TryRun(None, error, exc.logs or logs, since_ms(started))
        return TryRun(output, None, logs, since_ms(started))

    def _record(
        self,
        call: Call,
        key: str,
        revision: int | None,
        steps: list[Step],
        fields: dict[str, Any],
        reply: bytes,
        pin_deferred: bool,
    ) -> EncodedEvent:
        return encode_record(
            key,
            call.tenant,
            str(call.flow_type),
            str(call.trigger),
            call.req.request_id,
            call.req.signin_id,
            call.req.user.id or None,
            self._actor,
            revision,
            steps,
            fields,
            reply,
            pin_deferred,
        )
