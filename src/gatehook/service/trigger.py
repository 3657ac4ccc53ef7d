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
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gatehook.domain.catalogue import TENANT_RE, FlowType, Trigger, slot_of
from gatehook.domain.contract import (
    ActionOutput,
    AuditEvent,
    ErrorCode,
    TriggerReply,
    TriggerRequest,
)
from gatehook.domain.decide import Step, ends_slot, reply_fields, reply_of, so_far
from gatehook.domain.model import (
    ActionKind,
    ActionVersion,
    Attachment,
)
from gatehook.domain.rollout import in_canary
from gatehook.domain.targets import function_name
from gatehook.errors import (
    BadRequest,
    GatehookError,
    InvalidResult,
    ScriptError,
    ScriptTimeout,
    StorageUnavailable,
)
from gatehook.process.deadlines import Deadlines
from gatehook.sandbox.pool import ScriptJob, ScriptRun
from gatehook.service import safe_change
from gatehook.service.action_cache import ActionCaches
from gatehook.service.cache import Lru
from gatehook.service.call import Call, EarlyRun
from gatehook.service.encoding import (
    encode_record,
    encode_reply,
    event_id,
    fallback,
    reply_of_record,
    request_id_of,
    validation_message,
)
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
from gatehook.settings import Settings
from gatehook.templates.base import DryRun, TemplateServices
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


def _since_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _script_output(raw: bytes) -> ActionOutput:
    """A script's result as an action output; ``InvalidResult`` saying what is wrong."""
    try:
        return ActionOutput.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidResult(f"invalid result: {validation_message(exc)}") from None


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
        self._flows = flows
        self._action_cache = action_cache
        self._targets = targets
        self._rollouts = rollouts
        self._shadows = shadows
        self._publish_event = publish_event
        self._dry_run = DryRun()
        self._recorder = recorder
        self._scripts = scripts
        self._templates = templates
        self._journal = journal
        self._deadlines = deadlines
        self._settings = settings
        self._services = services
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
        self._fairness = TenantLimiter(
            floor, ceiling=max(floor, 64), slow_s=0.05, deadlines=deadlines
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
        if not TENANT_RE.fullmatch(tenant):
            return self._bad(payload, f"tenant {tenant!r} is not a valid tenant slug")
        members = slot_of(flow_type, trigger)
        if members is None:
            return self._bad(
                payload,
                f"{flow_type}.{trigger} is not a trigger of the catalogue (see docs/contract.md)",
            )
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

        call = self._call(tenant, ft, tr, req, final - reserve)
        call.disabled = self.lookup.disabled(tenant)
        if len(attachments) > 1:
            self._start_pure_scripts(call, attachments)
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
            safe_change.shadow(self, call, att, live)
        redact = self.lookup.recorded(tenant, f"{flow_type}.{trigger}")
        if redact is not None and self._recorder is not None and earlier is None:
            await safe_change.record(self, tenant, ft, tr, payload, reply_of(fields), redact)
        return body, outcome

    def _bad(self, payload: bytes, message: str) -> TriggerReply:
        return TriggerReply.failure(request_id_of(payload), "bad_request", message)

    @staticmethod
    def _reply_key(tenant: str, flow_type: str, trigger: str, request_id: str) -> str:
        digest = hashlib.sha256(request_id.encode()).hexdigest()[:40]
        return f"{tenant}.{flow_type}.{trigger}.{digest}"

    def _call(
        self, tenant: str, ft: FlowType, tr: Trigger, req: TriggerRequest, deadline: float
    ) -> Call:
        return Call(tenant, ft, tr, req, deadline)

    # -- running one attachment ----------------------------------------------------------
    def _start_pure_scripts(self, call: Call, attachments: list[Attachment]) -> None:
        """Start a slot's pure scripts together: their results are then taken in slot order.

        A script with no allowed hosts has no effect outside its context, and its input holds
        nothing of the actions before it (``decision_so_far`` is the templates' alone): it is
        a function of the request. Running them together gives the same decision as running
        them one after another; the pool sends them to one child in one write and their
        replies come back in one (one round trip per slot instead of one per script). A run
        the slot never reaches (an action before it blocked) is dropped unseen. Attachments
        with a rollout, a kill switch, network access, or a version not yet cached run in
        turn, and so do all when the tenant has not the sandbox slots free to start them all,
        or the scripts run in the worker itself (``starts_together`` is false: each is a
        function call there).
        """
        if not self._scripts.starts_together:
            return
        pure: list[ActionVersion] = []
        for att in attachments:
            if att.rollout is not None or att.action in call.disabled:
                continue
            version = self.lookup.cached_version(call.tenant, att.action, att.version)
            if (
                version is not None
                and version.kind is ActionKind.CUSTOM
                and not version.allowed_hosts
                and version.compiled is not None
            ):
                pure.append(version)
        if len(pure) < 2 or self._fairness.room(call.tenant) < len(pure):
            return  # the tenant's sandbox slots are taken: they would only queue
        call.early = {}
        affinity = f"{call.tenant}/{pure[0].action}/{pure[0].version}"
        for version in pure:
            config_json = self.lookup.config(version)[1]
            run = self._run_script(call, version, config_json, affinity)
            call.early[(version.action, version.version)] = EarlyRun.start(run)

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
        step = await self._run_version(call, att.action, wanted, before)
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

    async def _run_version(
        self, call: Call, action: str, wanted: str, before: list[Step], *, dry_run: bool = False
    ) -> Step:
        version = await self.lookup.version(call.tenant, action, wanted, call.deadline)
        if version is None:
            return Step(action, wanted, error=f"version {action}@{wanted} not found")
        allowed = version.allowed_to_fail
        remaining = call.deadline - time.monotonic()
        if remaining <= 0:
            return Step(action, wanted, error="request budget exhausted", allowed_to_fail=allowed)
        started = time.perf_counter()
        early = call.early.get((action, version.version)) if call.early is not None else None
        try:
            output = await self._execute(call, version, remaining, before, dry_run=dry_run)
        except ScriptError as exc:
            return Step(
                action,
                wanted,
                error=f"{exc.kind}: {exc.message}",
                allowed_to_fail=allowed,
                duration_ms=early.duration_ms if early else _since_ms(started),
            )
        except StorageUnavailable:
            raise
        except GatehookError as exc:
            error = f"{exc.code}: {exc.message}"
            return Step(action, wanted, error=error, allowed_to_fail=allowed)
        return Step(
            action,
            wanted,
            output=output,
            allowed_to_fail=allowed,
            duration_ms=early.duration_ms if early else _since_ms(started),
        )

    async def _execute(
        self,
        call: Call,
        version: ActionVersion,
        remaining: float,
        before: list[Step],
        *,
        dry_run: bool = False,
    ) -> ActionOutput:
        parsed, config_json = self.lookup.config(version)
        if version.kind is ActionKind.TARGET:
            if dry_run:
                return ActionOutput()  # replays and shadows call no endpoint
            if version.target is None or self._targets is None:
                raise ScriptError(f"target {version.action} is not available on this worker")
            return await self._targets.run(
                tenant=call.tenant,
                action=version.action,
                version=version.version,
                spec=version.target,
                function=function_name(call.flow_type.value, call.trigger.value),
                input_json=call.input_prefix + b"{}}",
                timeout_s=min(version.timeout_ms / 1000, remaining),
            )
        if version.kind is ActionKind.TEMPLATE:
            template = self._templates.get(version.template or "")
            services = self._dry_run if dry_run else self._services
            if template is None or services is None:
                raise ScriptError(f"template {version.template} is not available on this worker")
            timeout = min(version.timeout_ms / 1000, remaining)
            decided = so_far(before)
            # leave room to return in time
            inp = call.template_input(version.action, str(decided), timeout * 1000 * 0.9)
            try:
                async with self._deadlines.timeout(time.monotonic() + timeout):
                    return await template.run(inp, parsed, services)
            except TimeoutError:
                raise ScriptError(
                    f"timeout: template took longer than {timeout * 1000:.0f} ms"
                ) from None
            except GatehookError:
                raise
            except Exception as exc:
                log.exception(
                    "template failed",
                    extra={
                        "tenant": call.tenant,
                        "action": version.action,
                        "version": version.version,
                        "template": version.template,
                        "request_id": call.req.request_id,
                    },
                )
                raise ScriptError(f"template {version.template} failed: {exc}") from exc
        early = call.early.pop((version.action, version.version), None) if call.early else None
        if early is not None:
            output = _script_output((await early.run).output)
        else:
            output = _script_output((await self._run_script(call, version, config_json)).output)
        if output.cache and version.uses_cache and self._action_cache is not None and not dry_run:
            self._action_cache.write(call.tenant, version.action, output.cache)
        return output

    async def _run_script(
        self, call: Call, version: ActionVersion, config_json: bytes, affinity: str = ""
    ) -> ScriptRun:
        if version.uses_cache and self._action_cache is not None:
            cache = await self._action_cache.snapshot(call.tenant, version.action, call.deadline)
            config_json += b',"cache":' + cache
        job = self._job(call, version, config_json, affinity)
        # A tenant flooding the sandbox (endless loops, memory hogs) waits for its own slots,
        # never for the whole pool: other tenants keep a child to run on.
        if not await self._fairness.acquire(call.tenant, call.deadline - time.monotonic()):
            raise ScriptTimeout(version.timeout_ms)
        began = time.monotonic()
        ran: float | None = None
        try:
            run = await self._scripts.run(job)
            # The limiter judges the script by the time it ran in its child, not by the time
            # it waited for one: queueing under load must not shrink a fast tenant's limit
            # (that collapsed it to the floor, which queued more: measured in BENCHMARKS.md).
            ran = run.duration_ms / 1000
        finally:
            self._fairness.release(call.tenant, time.monotonic() - began if ran is None else ran)
        return run

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
        """Decide recorded requests again with ``action`` at ``version`` (see
        ``safe_change.replay``)."""
        return await safe_change.replay(
            self, tenant, flow_type, trigger, records, action, version, examples
        )

    @staticmethod
    def _job(
        call: Call, version: ActionVersion, config_json: bytes, affinity: str = ""
    ) -> ScriptJob:
        if version.compiled is None or version.style is None:
            raise ScriptError(f"{version.action}@{version.version} has no compiled script")
        return ScriptJob(
            tenant=call.tenant,
            action=version.action,
            version=version.version,
            code=version.compiled,
            style=version.style.value,
            input=call.input_prefix + config_json + b"}",
            timeout_ms=version.timeout_ms,
            allowed_hosts=tuple(version.allowed_hosts),
            deadline=call.deadline,
            affinity=affinity,
        )

    async def try_version(
        self, tenant: str, flow_type: str, trigger: str, req: TriggerRequest, version: ActionVersion
    ) -> TryRun:
        """Run one stored ``version`` on ``req`` as its flow slot would, and keep its logs.

        A dry run for the console's and the admin API's test box: no audit event, no reply
        record, no decision for a sign-in. The action itself runs for real (a webhook
        template sends, a rate limit counts).
        """
        call = self._call(
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
                output = await self._execute(call, version, version.timeout_ms / 1000, [])
            else:
                run = await self._scripts.run(
                    self._job(call, version, self.lookup.config(version)[1])
                )
                logs = run.logs
                output = _script_output(run.output)
        except ScriptError as exc:
            error = f"{exc.kind}: {exc.message}"
            return TryRun(None, error, exc.logs or logs, _since_ms(started))
        return TryRun(output, None, logs, _since_ms(started))

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
