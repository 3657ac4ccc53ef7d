"""Where an action runs: one version on one call, whatever its kind.

- a **template** (platform action, native Python) runs here, in the worker, under its
  deadline (``templates/``);
- a **custom** action's script runs in the sandbox (``sandbox/``: the children, or the
  worker itself with isolation ``worker``), each tenant within its share of the sandbox's
  slots (``service.fairness``);
- a **target** is an HTTP call to the tenant's endpoint (``transport.targets``).

``ActionRunner`` is what the live decision path, shadows, replays and the test box share:
the same lookups and the same way of running a version, dry (nothing sent, no counter, no
endpoint called) where asked.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from gatehook.domain.contract import ActionOutput
from gatehook.domain.decide import Step, so_far
from gatehook.domain.model import ActionKind, ActionVersion, Attachment
from gatehook.domain.targets import function_name
from gatehook.errors import (
    GatehookError,
    InvalidResult,
    ScriptError,
    ScriptTimeout,
    StorageUnavailable,
)
from gatehook.process.deadlines import Deadlines
from gatehook.service.action_cache import ActionCaches
from gatehook.service.call import Call, EarlyRun
from gatehook.service.encoding import validation_message
from gatehook.service.fairness import TenantLimiter
from gatehook.service.lookup import FlowLookup
from gatehook.service.ports import ScriptJob, ScriptRun, ScriptRunner, TargetRunner
from gatehook.templates.base import DryRun, TemplateServices
from gatehook.templates.registry import TemplateRegistry

__all__ = ["ActionRunner", "script_output", "since_ms"]

log = logging.getLogger("gatehook.trigger")


def since_ms(started: float) -> float:
    """Milliseconds since ``started`` (``time.perf_counter``)."""
    return (time.perf_counter() - started) * 1000


def script_output(raw: bytes) -> ActionOutput:
    """A script's result as an action output; ``InvalidResult`` saying what is wrong."""
    try:
        return ActionOutput.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidResult(f"invalid result: {validation_message(exc)}") from None


class ActionRunner:
    """Runs action versions (see the module)."""

    def __init__(
        self,
        *,
        lookup: FlowLookup,
        scripts: ScriptRunner,
        templates: TemplateRegistry,
        deadlines: Deadlines,
        fairness: TenantLimiter,
        services: TemplateServices | None = None,
        targets: TargetRunner | None = None,
        action_cache: ActionCaches | None = None,
    ) -> None:
        self.lookup = lookup
        self.scripts = scripts
        self._templates = templates
        self._deadlines = deadlines
        self.fairness = fairness  # each tenant's share of the sandbox's slots
        self._services = services
        self._dry_run = DryRun()
        self._targets = targets
        self._action_cache = action_cache

    async def run_version(
        self, call: Call, action: str, wanted: str, before: list[Step], *, dry_run: bool = False
    ) -> Step:
        """Run ``action`` at version ``wanted`` on ``call`` after the steps ``before``: its
        step, an error step when it fails (``StorageUnavailable`` is raised: no decision can
        be made without storage)."""
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
            output = await self.execute(call, version, remaining, before, dry_run=dry_run)
        except ScriptError as exc:
            return Step(
                action,
                wanted,
                error=f"{exc.kind}: {exc.message}",
                allowed_to_fail=allowed,
                duration_ms=early.duration_ms if early else since_ms(started),
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
            duration_ms=early.duration_ms if early else since_ms(started),
        )

    async def execute(
        self,
        call: Call,
        version: ActionVersion,
        remaining: float,
        before: list[Step],
        *,
        dry_run: bool = False,
    ) -> ActionOutput:
        """The output of ``version`` on ``call`` within ``remaining`` seconds; a
        ``ScriptError`` when it fails."""
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
            return await self._template(call, version, remaining, before, dry_run, parsed)
        early = call.early.pop((version.action, version.version), None) if call.early else None
        if early is not None:
            output = script_output((await early.run).output)
        else:
            output = script_output((await self.run_script(call, version, config_json)).output)
        if output.cache and version.uses_cache and self._action_cache is not None and not dry_run:
            self._action_cache.write(call.tenant, version.action, output.cache)
        return output

    async def _template(
        self,
        call: Call,
        version: ActionVersion,
        remaining: float,
        before: list[Step],
        dry_run: bool,
        parsed: Any,
    ) -> ActionOutput:
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
                output = await template.run(inp, parsed, services)
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
        return output

    async def run_script(
        self, call: Call, version: ActionVersion, config_json: bytes, affinity: str = ""
    ) -> ScriptRun:
        """Run a custom version's script in the sandbox, within the tenant's share of it."""
        if version.uses_cache and self._action_cache is not None:
            cache = await self._action_cache.snapshot(call.tenant, version.action, call.deadline)
            config_json += b',"cache":' + cache
        job = self.job(call, version, config_json, affinity)
        # A tenant flooding the sandbox (endless loops, memory hogs) waits for its own slots,
        # never for the whole pool: other tenants keep a child to run on.
        if not await self.fairness.acquire(call.tenant, call.deadline - time.monotonic()):
            raise ScriptTimeout(version.timeout_ms)
        began = time.monotonic()
        ran: float | None = None
        try:
            run = await self.scripts.run(job)
            # The limiter judges the script by the time it ran in its child, not by the time
            # it waited for one: queueing under load must not shrink a fast tenant's limit
            # (that collapsed it to the floor, which queued more: measured in BENCHMARKS.md).
            ran = run.duration_ms / 1000
        finally:
            self.fairness.release(call.tenant, time.monotonic() - began if ran is None else ran)
        return run

    @staticmethod
    def job(
        call: Call, version: ActionVersion, config_json: bytes, affinity: str = ""
    ) -> ScriptJob:
        """The sandbox job of a custom version on ``call``."""
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

    def start_pure_scripts(self, call: Call, attachments: list[Attachment]) -> None:
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
        if not self.scripts.starts_together:
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
        if len(pure) < 2 or self.fairness.room(call.tenant) < len(pure):
            return  # the tenant's sandbox slots are taken: they would only queue
        call.early = {}
        affinity = f"{call.tenant}/{pure[0].action}/{pure[0].version}"
        for version in pure:
            config_json = self.lookup.config(version)[1]
            run = self.run_script(call, version, config_json, affinity)
            call.early[(version.action, version.version)] = EarlyRun.start(run)
