"""A starting worker's warm-up: the flows, versions and scripts of the tenants that were
active lately, loaded before the worker joins the queue group.

Without it a worker start (a deploy, a scale-out) meets every tenant cold at once: each
first request reads the tenant's heads, flow and versions and loads its scripts, and a
platform of a thousand tenants turns that into a stampede of storage reads and interpreter
loads while sign-ins wait. The warm-up does the same reads, a bounded number at a time, and
stops at its time budget: what it did not reach is loaded on first use, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gatehook.domain.model import ActionKind, ActionVersion
from gatehook.errors import GatehookError
from gatehook.sandbox.pool import ScriptJob
from gatehook.service.lookup import FlowLookup

__all__ = ["ScriptWarmer", "WarmReport", "warm_tenants"]

log = logging.getLogger("gatehook.trigger")


class ScriptWarmer(Protocol):
    """Loads a script into its interpreter without running it (SandboxPool)."""

    async def warm(self, job: ScriptJob) -> bool: ...


@dataclass(slots=True)
class WarmReport:
    """What a warm-up did."""

    tenants: int = 0
    versions: int = 0
    scripts: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    complete: bool = True


async def warm_tenants(
    lookup: FlowLookup,
    scripts: ScriptWarmer,
    tenants: Iterable[str],
    *,
    budget_s: float,
    concurrency: int,
) -> WarmReport:
    """Load each tenant's current flows, their versions and scripts into the caches, at most
    ``concurrency`` tenants at a time, for at most ``budget_s``."""
    report = WarmReport()
    started = time.monotonic()
    queue = list(dict.fromkeys(tenants))
    pending = iter(queue)

    async def one(tenant: str) -> None:
        heads = await lookup.tenant_heads(tenant)
        for ft, revision in heads.revisions.items():
            if revision is None:
                continue
            flow = await lookup.flow(tenant, ft, revision)
            for attachments in flow.slots.values() if flow else []:
                for att in attachments:
                    wanted = [att.version]
                    if att.rollout is not None:
                        wanted += [v for v in (att.rollout.canary, att.rollout.shadow) if v]
                    for name in wanted:
                        version = await lookup.version(tenant, att.action, name)
                        if version is not None:
                            report.versions += 1
                            lookup.config(version)
                            if await _warm_script(scripts, version):
                                report.scripts += 1
        report.tenants += 1

    async def drain() -> None:
        for tenant in pending:
            try:
                await one(tenant)
            except GatehookError as exc:
                report.failed.append(f"{tenant}: {exc}")

    runners = [asyncio.create_task(drain()) for _ in range(max(1, concurrency))]
    done, undone = await asyncio.wait(runners, timeout=budget_s)
    for task in undone:
        task.cancel()
    if undone:
        report.complete = False
        await asyncio.gather(*undone, return_exceptions=True)
    for task in done:
        task.result()  # a bug surfaces here
    report.seconds = time.monotonic() - started
    return report


async def _warm_script(scripts: ScriptWarmer, version: ActionVersion) -> bool:
    if version.kind is not ActionKind.CUSTOM or not version.compiled or version.style is None:
        return False
    job = ScriptJob(
        tenant=version.tenant,
        action=version.action,
        version=version.version,
        code=version.compiled,
        style=version.style.value,
        input=b"",
        timeout_ms=max(version.timeout_ms, 1000),
    )
    try:
        return await scripts.warm(job)
    except (GatehookError, TimeoutError) as exc:
        log.info(
            "warm-up: %s/%s %s not loaded: %s", version.tenant, version.action, version.version, exc
        )
        return False
