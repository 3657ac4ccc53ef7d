"""The management API on NATS: ``gatehook.v1.admin.<tenant>.<operation>`` request-reply.

The tenant comes from the subject only (never the body), so NATS permissions on subjects
are the access control: an operator of tenant A can be allowed ``gatehook.v1.admin.a.>``
and nothing else. Every reply is ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"code", "message", "field", "retryable"}}``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from gatehook.admin.apply import apply_file
from gatehook.admin.principal import CLAIMED, PRINCIPAL, acting
from gatehook.admin.requests import (
    OPERATIONS,
    Apply,
    Attach,
    ConsoleAudit,
    CreateAction,
    Detach,
    Empty,
    FlowRef,
    Named,
    Pin,
    PublishVersion,
    Recording,
    Reorder,
    ReplayReq,
    Rollback,
    RolloutRef,
    RolloutStart,
    SetFlow,
    Switch,
    TryAction,
    UpdateAction,
    schema_documents,
)
from gatehook.admin.rollouts import RolloutAdmin
from gatehook.admin.service import AdminService, Draft, check_slot
from gatehook.domain import subjects
from gatehook.domain.catalogue import TENANT_RE
from gatehook.domain.contract import TriggerRequest
from gatehook.domain.flowfile import parse_ref
from gatehook.domain.ingress import masked
from gatehook.domain.model import ActionVersion, Attachment, FlowRevision, latest_of
from gatehook.domain.problems import field_of, problems, summary
from gatehook.errors import BadRequest, Forbidden, GatehookError, NotFound, ValidationFailed
from gatehook.templates.registry import SECRET_MASK, TemplateRegistry

if TYPE_CHECKING:
    from gatehook.service.trigger import TryRun

__all__ = ["OPERATIONS", "AdminApi", "schema_documents"]

log = logging.getLogger("gatehook.admin")

#: Runs one stored version on a trigger request (``TriggerService.try_version``).
Tester = Callable[[str, str, str, TriggerRequest, ActionVersion], Awaitable["TryRun"]]
Replayer = Callable[[str, str, datetime, tuple[str, str], int], Awaitable[dict[str, Any]]]


def _template_source(template: object) -> str | None:
    """The Python source of a template's module (read-only, for consoles and reviews)."""
    try:
        return inspect.getsource(inspect.getmodule(type(template)) or type(template))
    except (OSError, TypeError):
        return None


def _version_view(v: ActionVersion, templates: TemplateRegistry) -> dict[str, Any]:
    data = v.model_dump(mode="json", exclude={"compiled"})
    data["config"] = templates.mask_secrets(v.template, data["config"])
    if data.get("target") and data["target"].get("signing_key"):
        data["target"]["signing_key"] = SECRET_MASK  # never readable back
    data["secrets"] = dict.fromkeys(data.get("secrets") or {}, SECRET_MASK)
    return data


def _flow_view(flow: FlowRevision | None) -> dict[str, Any] | None:
    return None if flow is None else flow.model_dump(mode="json")


class AdminApi:
    """Dispatches admin requests to ``AdminService``; bytes in, bytes out."""

    def __init__(
        self,
        service: AdminService,
        templates: TemplateRegistry,
        *,
        tester: Tester | None = None,
        rollouts: RolloutAdmin | None = None,
        replayer: Replayer | None = None,
        trusted: frozenset[str] = frozenset({"gatehook-console"}),
    ) -> None:
        self._service = service
        self._trusted = trusted  # principals whose claimed actor is recorded as the actor
        self._templates = templates
        self._tester = tester
        self._rollouts = rollouts or RolloutAdmin(service)
        self._replayer = replayer
        self._handlers: dict[str, Callable[[str, Any], Awaitable[Any]]] = {
            "actions.create": self._create,
            "actions.update": self._update,
            "actions.publish": self._publish,
            "actions.list": self._list,
            "actions.show": self._show,
            "actions.test": self._try,
            "templates.list": self._templates_list,
            "templates.show": self._templates_show,
            "flows.show": self._flow_show,
            "flows.history": self._flow_history,
            "flows.attach": self._attach,
            "flows.detach": self._detach,
            "flows.update": self._pin,
            "flows.reorder": self._reorder,
            "flows.rollback": self._rollback,
            "flows.set": self._set_flow,
            "apply": self._apply,
            "actions.disable": self._disable,
            "actions.enable": self._enable,
            "rollouts.status": self._rollout_status,
            "rollouts.start": self._rollout_start,
            "rollouts.promote": self._promote,
            "rollouts.abort": self._abort,
            "recordings.set": self._recording,
            "replay": self._replay,
            "console.audit": self._console_audit,
            "ingress.show": self._ingress_show,
        }

    async def handle(self, subject: str, payload: bytes) -> bytes:
        """Answer one admin request (``gatehook.v1.admin.<tenant>.<operation>``, or sent as an
        authenticated principal: ``admin.principal``). Never raises."""
        principal, parts = subjects.admin_parts(subject)
        tokens = PRINCIPAL.set(principal), CLAIMED.set(None)
        try:
            return await self._handle(subject, parts, principal, payload)
        finally:
            PRINCIPAL.reset(tokens[0])
            CLAIMED.reset(tokens[1])

    async def _handle(
        self, subject: str, parts: list[str], principal: str | None, payload: bytes
    ) -> bytes:
        try:
            if len(parts) < 5 or not TENANT_RE.fullmatch(parts[3]):
                raise BadRequest(f"subject must be {subjects.said(subjects.ADMIN_FORM)}")
            tenant, op = parts[3], ".".join(parts[4:])
            model = OPERATIONS.get(op)
            if model is None:
                raise BadRequest(f"unknown operation {op!r}; one of {', '.join(OPERATIONS)}")
            try:
                req = model.model_validate_json(payload or b"{}")
            except ValidationError as exc:
                raise _refused(exc, model, payload) from None
            if op == "console.audit" and principal not in self._trusted:
                raise Forbidden(
                    "console.audit is the console's: only a trusted principal"
                    " (GATEHOOK_TRUSTED_PRINCIPALS) may record console events"
                )
            actor, claimed = acting(principal, req.actor, self._trusted)
            if actor != req.actor:
                req = req.model_copy(update={"actor": actor})
            CLAIMED.set(claimed)
            result = await self._handlers[op](tenant, req)
            return json.dumps({"ok": True, "result": result}, default=str).encode()
        except GatehookError as exc:
            error = {
                "code": exc.code,
                "message": exc.message,
                "field": getattr(exc, "field", None),
                "retryable": exc.retryable,
            }
            if not exc.retryable:  # refused, not failed: audited for the tenant
                await self._refused(parts, payload, error)
            return json.dumps({"ok": False, "error": error}).encode()
        except Exception:
            log.exception("admin operation failed: %s", subject)
            error = {"code": "internal", "message": "internal error", "retryable": True}
            return json.dumps({"ok": False, "error": error}).encode()

    async def _refused(self, parts: list[str], payload: bytes, error: dict[str, Any]) -> None:
        """An ``admin.refused`` event for a request the API refused (when the subject names
        a tenant); publishing it never changes the reply."""
        if len(parts) < 5 or not TENANT_RE.fullmatch(parts[3]):
            log.info("admin request refused on %s: %s", ".".join(parts)[:200], error["message"])
            return
        actor = "unknown"
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            given = json.loads(payload or b"{}").get("actor")
            actor = given[:200] if isinstance(given, str) and given else "api"
        actor, claimed = acting(PRINCIPAL.get(), actor, self._trusted)
        CLAIMED.set(claimed)
        event = self._service.event(
            "admin.refused",
            parts[3],
            actor,
            error=error["message"][:1000],
            details={"operation": ".".join(parts[4:])[:200], "code": error["code"]},
        )
        try:
            await self._service.publish_events([event])
        except GatehookError as exc:
            log.warning("could not audit a refused admin request: %s", exc.message)

    async def _ingress_show(self, tenant: str, req: Empty) -> Any:
        return {"ingress": masked(await self._service.ingress(tenant))}

    async def _console_audit(self, tenant: str, req: ConsoleAudit) -> Any:
        details = {
            k: v for k, v in (("method", req.method), ("role", req.role), ("path", req.path)) if v
        }
        event = self._service.event(
            f"console.{req.event}", tenant, req.actor, error=req.reason, details=details
        )
        await self._service.publish_events([event])
        return {"event_id": event.event_id}

    # -- actions -----------------------------------------------------------------------------
    async def _create(self, tenant: str, req: CreateAction) -> Any:
        action = await self._service.create_action(
            tenant,
            req.name,
            template=req.template,
            triggers=req.triggers,
            kind=req.kind,
            display_name=req.display_name,
            description=req.description,
            config_schema=req.config_schema,
            actor=req.actor,
        )
        return action.model_dump(mode="json")

    async def _update(self, tenant: str, req: UpdateAction) -> Any:
        changed = await self._service.update_action(
            tenant,
            req.name,
            actor=req.actor,
            triggers=req.triggers,
            display_name=req.display_name,
            description=req.description,
            config_schema=req.config_schema,
        )
        return {
            "changed": changed,
            "action": (await self._service.action(tenant, req.name)).model_dump(mode="json"),
        }

    async def _publish(self, tenant: str, req: PublishVersion) -> Any:
        draft = Draft(
            source=req.source,
            language=req.language,
            config=req.config,
            timeout_ms=req.timeout_ms,
            allowed_to_fail=req.allowed_to_fail,
            allowed_hosts=req.allowed_hosts,
            target=req.target,
            secrets=req.secrets,
        )
        generated: list[str] = []
        version, created = await self._service.publish(
            tenant,
            req.name,
            draft,
            actor=req.actor,
            bump=req.bump,
            version=req.version,
            generated=generated,
        )
        out: dict[str, Any] = {
            "version": _version_view(version, self._templates),
            "created": created,
        }
        if generated:
            out["signing_key"] = generated[0]  # made here: shown this once, masked after
        return out

    async def _list(self, tenant: str, req: Empty) -> Any:
        rows = await self._service.list_actions(tenant)
        return [
            {
                "name": r.action.name,
                "kind": r.action.kind.value,
                "template": r.action.template,
                "triggers": r.action.compatible(),
                "slots": r.action.fitting_slots(),
                "display_name": r.action.display_name,
                "latest_version": r.action.latest_version,
                "attached": r.attached,
                "disabled": r.action.disabled.model_dump(mode="json")
                if r.action.disabled
                else None,
            }
            for r in rows
        ]

    async def _show(self, tenant: str, req: Named) -> Any:
        action = await self._service.action(tenant, req.name)
        versions = await self._service.versions(tenant, req.name)
        return {
            "action": action.model_dump(mode="json"),
            "versions": [_version_view(v, self._templates) for v in versions],
        }

    async def _try(self, tenant: str, req: TryAction) -> Any:
        if self._tester is None:
            raise BadRequest("this worker cannot run actions (no sandbox)")
        check_slot(req.flow_type, req.trigger)
        try:
            request = TriggerRequest.model_validate(req.request)
        except ValidationError as exc:
            lines = [f"request.{line}" for line in problems(exc, TriggerRequest, req.request)]
            where = field_of(exc, "")
            field = f"request.{where}" if where else "request"
            raise ValidationFailed(summary(lines), field=field) from None
        if req.draft is not None:
            version = await self._service.draft_version(
                tenant, req.name, Draft(**req.draft.model_dump())
            )
            concrete = version.version
        else:
            concrete = await self._concrete(tenant, req.name, req.version)
            versions = {v.version: v for v in await self._service.versions(tenant, req.name)}
            found = versions.get(concrete)
            if found is None:
                raise NotFound(f"{req.name}@{concrete} not found")
            version = found
        run = await self._tester(tenant, req.flow_type, req.trigger, request, version)
        return {
            "version": concrete,
            "ok": run.error is None,
            "output": None if run.output is None else run.output.model_dump(mode="json"),
            "error": run.error,
            "logs": run.logs,
            "duration_ms": round(run.duration_ms, 3),
        }

    async def _disable(self, tenant: str, req: Switch) -> Any:
        switch = await self._rollouts.disable(
            tenant, req.name, reason=req.reason, fallback=req.fallback, actor=req.actor
        )
        return {"name": req.name, "disabled": switch.model_dump(mode="json")}

    async def _enable(self, tenant: str, req: Switch) -> Any:
        await self._rollouts.enable(tenant, req.name, reason=req.reason, actor=req.actor)
        return {"name": req.name, "disabled": None}

    async def _rollout_status(self, tenant: str, req: RolloutRef) -> Any:
        if (req.flow_type is None) != (req.trigger is None):
            raise ValidationFailed("give both flow_type and trigger, or neither", field="trigger")
        return await self._rollouts.status(tenant, req.flow_type, req.trigger)

    async def _end(
        self, tenant: str, req: RolloutRef, state: Literal["promoted", "aborted"]
    ) -> Any:
        if req.flow_type is None or req.trigger is None or req.action is None:
            raise ValidationFailed("give flow_type, trigger and action", field="action")
        flow = await self._rollouts.end(
            tenant, req.flow_type, req.trigger, req.action, state, actor=req.actor
        )
        return {"flow": _flow_view(flow)}

    async def _recording(self, tenant: str, req: Recording) -> Any:
        check_slot(req.flow_type, req.trigger)
        slot = f"{req.flow_type}.{req.trigger}"
        redact = [p.strip() for p in req.redact if p.strip()]
        await self._service.set_recording(
            tenant, req.flow_type, req.trigger, redact if req.enabled else None, actor=req.actor
        )
        return {"slot": slot, "recording": req.enabled, "redact": redact}

    async def _replay(self, tenant: str, req: ReplayReq) -> Any:
        if self._replayer is None:
            raise BadRequest("this worker cannot replay (no sandbox)")
        check_slot(req.flow_type, req.trigger)
        try:
            name, version = parse_ref(req.with_)
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="with") from None
        if version == "latest":
            version = await self._concrete(tenant, name, "latest")
        since = datetime.now(UTC) - timedelta(seconds=req.since_s)
        slot = f"{req.flow_type}.{req.trigger}"
        report = await self._replayer(tenant, slot, since, (name, version), req.limit)
        return {"slot": slot, "with": f"{name}@{version}", **report}

    async def _rollout_start(self, tenant: str, req: RolloutStart) -> Any:
        versions: dict[str, str | None] = {}
        for role in ("canary", "shadow"):
            wanted = getattr(req, role)
            versions[role] = (
                None if wanted is None else await self._concrete(tenant, req.action, wanted)
            )
        flow = await self._rollouts.start(
            tenant,
            req.flow_type,
            req.trigger,
            req.action,
            canary=versions["canary"],
            percent=req.percent,
            shadow=versions["shadow"],
            error_rate=req.error_rate,
            min_runs=req.min_runs,
            actor=req.actor,
        )
        return {"flow": _flow_view(flow)}

    async def _promote(self, tenant: str, req: RolloutRef) -> Any:
        return await self._end(tenant, req, "promoted")

    async def _abort(self, tenant: str, req: RolloutRef) -> Any:
        return await self._end(tenant, req, "aborted")

    async def _templates_list(self, tenant: str, req: Empty) -> Any:
        return [
            {
                "name": t.name,
                "description": t.description,
                "triggers": [x.value for x in t.triggers],
            }
            for t in self._templates
        ]

    async def _templates_show(self, tenant: str, req: Named) -> Any:
        t = self._templates.get(req.name)
        if t is None:
            raise NotFound(f"template {req.name} not found")
        return {
            "name": t.name,
            "description": t.description,
            "triggers": [x.value for x in t.triggers],
            "secret_fields": list(t.secret_fields),
            "config_schema": t.config_schema(),
            "source": _template_source(t),
        }

    # -- flows -------------------------------------------------------------------------------
    async def _flow_show(self, tenant: str, req: FlowRef) -> Any:
        return _flow_view(await self._service.flow(tenant, req.flow_type))

    async def _flow_history(self, tenant: str, req: FlowRef) -> Any:
        return [
            _flow_view(f) for f in await self._service.history(tenant, req.flow_type, req.limit)
        ]

    async def _slot(self, tenant: str, flow_type: str, trigger: str) -> list[Attachment]:
        flow = await self._service.flow(tenant, flow_type)
        if flow is None:
            return []
        return [a for tr, atts in flow.slots.items() if tr.value == trigger for a in atts]

    async def _concrete(self, tenant: str, action: str, version: str) -> str:
        if version != "latest":
            return version
        latest = latest_of(await self._service.versions(tenant, action))
        if latest is None:
            raise NotFound(f"action {action} has no published version")
        return latest.version

    async def _commit(self, tenant: str, req: Any, atts: list[Attachment]) -> Any:
        flow = await self._service.set_slot(
            tenant, req.flow_type, req.trigger, atts, actor=req.actor
        )
        current = flow or await self._service.flow(tenant, req.flow_type)
        return {"changed": flow is not None, "flow": _flow_view(current)}

    async def _attach(self, tenant: str, req: Attach) -> Any:
        atts = await self._slot(tenant, req.flow_type, req.trigger)
        if any(a.action == req.action for a in atts):
            raise ValidationFailed(f"{req.action} is attached already; use flows.update")
        version = await self._concrete(tenant, req.action, req.version)
        pos = len(atts) if req.position is None else min(req.position, len(atts))
        atts.insert(pos, Attachment(action=req.action, version=version))
        return await self._commit(tenant, req, atts)

    async def _detach(self, tenant: str, req: Detach) -> Any:
        atts = await self._slot(tenant, req.flow_type, req.trigger)
        if not any(a.action == req.action for a in atts):
            raise NotFound(f"{req.action} is not attached to {req.flow_type}.{req.trigger}")
        return await self._commit(tenant, req, [a for a in atts if a.action != req.action])

    async def _pin(self, tenant: str, req: Pin) -> Any:
        atts = await self._slot(tenant, req.flow_type, req.trigger)
        if not any(a.action == req.action for a in atts):
            raise NotFound(f"{req.action} is not attached to {req.flow_type}.{req.trigger}")
        version = await self._concrete(tenant, req.action, req.version)
        new = [
            Attachment(action=a.action, version=version) if a.action == req.action else a
            for a in atts
        ]
        return await self._commit(tenant, req, new)

    async def _reorder(self, tenant: str, req: Reorder) -> Any:
        atts = await self._slot(tenant, req.flow_type, req.trigger)
        if sorted(req.order) != sorted(a.action for a in atts):
            raise ValidationFailed(
                "order must name exactly the attached actions: "
                + ", ".join(a.action for a in atts),
                field="order",
            )
        by_name = {a.action: a for a in atts}
        return await self._commit(tenant, req, [by_name[n] for n in req.order])

    async def _set_flow(self, tenant: str, req: SetFlow) -> Any:
        flow = await self._service.set_flow(
            tenant, req.flow_type, req.slots, base=req.revision, actor=req.actor
        )
        current = flow or await self._service.flow(tenant, req.flow_type)
        return {"changed": flow is not None, "flow": _flow_view(current)}

    async def _rollback(self, tenant: str, req: Rollback) -> Any:
        flow = await self._service.rollback(tenant, req.flow_type, req.revision, actor=req.actor)
        current = flow or await self._service.flow(tenant, req.flow_type)
        return {"changed": flow is not None, "flow": _flow_view(current)}

    async def _apply(self, tenant: str, req: Apply) -> Any:
        # The subject decides the tenant, whatever the file says (one file, many tenants).
        plan = await apply_file(
            self._service,
            req.file,
            req.sources,
            tenant=tenant,
            actor=req.actor,
            dry_run=req.dry_run,
        )
        return {"tenant": plan.tenant, "changes": plan.changes, "applied": plan.applied}


def _refused(exc: ValidationError, model: type[BaseModel], payload: bytes) -> ValidationFailed:
    """Every problem of a request body at once, in plain words (``domain.problems``)."""
    try:
        raw = json.loads(payload or b"{}")
    except ValueError:
        raw = None
    return ValidationFailed(summary(problems(exc, model, raw)), field=field_of(exc, "body"))
