"""A starting worker's warm-up: the flows, versions and scripts of the tenants that were
active lately, loaded before the worker joins the queue group.

Without it a worker start (a deploy, a scale-out) meets every tenant cold at once: each
first request reads the tenant's heads, flow and versions and loads its scripts, and a
platform of a thousand tenants turns that into a stampede of storage reads and interpreter
loads while sign-ins wait. The warm-up does the same reads, a bounded number at a time, and
stops at its time budget: what it did not reach is loaded on first use.

Which tenants were active lately is what the workers record as they serve
(``TenantActivity``): each worker, every ``warm.report_s``, the tenants it served.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gatehook.domain.model import ActionKind, ActionVersion
from gatehook.errors import GatehookError
from gatehook.service.lookup import FlowLookup
from gatehook.service.ports import ScriptJob
from gatehook.settings import WarmSettings

__all__ = [
    "ActivityStore",
    "ScriptWarmer",
    "TenantActivity",
    "WarmReport",
    "warm_start",
    "warm_tenants",
]

log = logging.getLogger("gatehook.trigger")


class ScriptWarmer(Protocol):
    """Loads a script into its interpreter without running it (SandboxPool)."""

    async def warm(self, job: ScriptJob) -> bool: ...


class ActivityStore(Protocol):
    """Where workers record the tenants they served (MongoStore)."""

    async def record_activity(self, worker: str, seen: Mapping[str, datetime]) -> None: ...

    async def active_tenants(self, since: datetime, limit: int) -> list[str]: ...


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


async def warm_start(
    store: ActivityStore, lookup: FlowLookup, scripts: ScriptWarmer, warm: WarmSettings
) -> WarmReport | None:
    """Load the tenants active within ``warm.within_s`` (at most ``warm.tenants``) before the
    worker takes requests, and log what was done; None when there was nothing to do."""
    if warm.tenants == 0:
        return None
    since = datetime.now(UTC) - timedelta(seconds=warm.within_s)
    try:
        tenants = await store.active_tenants(since, warm.tenants)
    except GatehookError as exc:
        log.warning("warm-up skipped: %s", exc)
        return None
    report = await warm_tenants(
        lookup, scripts, tenants, budget_s=warm.budget_s, concurrency=warm.concurrency
    )
    log.info(
        "warmed %d of %d recently active tenants (%d versions, %d scripts) in %.2f s%s",
        report.tenants,
        len(tenants),
        report.versions,
        report.scripts,
        report.seconds,
        "" if report.complete else " (budget reached; the rest load on first use)",
    )
    for failure in report.failed[:5]:
        log.warning("warm-up: %s", failure)
    return report


class TenantActivity:
    """The tenants this worker served lately (within ``warm.within_s``, at most
    ``warm.tenants``, the most recent), recorded for the next worker's warm start."""

    def __init__(self, store: ActivityStore, worker: str, warm: WarmSettings) -> None:
        self._store = store
        self._worker = worker
        self._warm = warm
        self._seen: dict[str, datetime] = {}  # insertion order: the most recent last

    async def run(self, served: Callable[[], set[str]]) -> None:
        """Every ``warm.report_s``, record the tenants ``served()`` returns (best effort)."""
        while True:
            await asyncio.sleep(self._warm.report_s)
            await self.flush(served())

    async def flush(self, fresh: set[str]) -> None:
        """Record ``fresh`` with the tenants seen before, dropping those too old or too many."""
        if not fresh and not self._seen:
            return
        now = datetime.now(UTC)
        for tenant in fresh:
            self._seen.pop(tenant, None)
            self._seen[tenant] = now
        cutoff = now - timedelta(seconds=self._warm.within_s)
        while self._seen and (
            len(self._seen) > max(self._warm.tenants, 1) or next(iter(self._seen.values())) < cutoff
        ):
            self._seen.pop(next(iter(self._seen)))
        try:
            await self._store.record_activity(self._worker, self._seen)
        except GatehookError as exc:
            log.info("tenant activity not recorded: %s", exc)
