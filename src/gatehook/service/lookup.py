"""The flows and action versions a trigger request needs, through the hot path's caches:
a tenant's current revisions (single-flight loads, served stale while one refresh runs), the
revisions pinned per sign-in, flow revisions, action versions and their parsed configs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from gatehook.domain.catalogue import FlowType
from gatehook.domain.model import ActionKind, ActionVersion, Disabled, FlowRevision, TenantHeads
from gatehook.errors import StorageUnavailable
from gatehook.logs import Sparse
from gatehook.service.cache import Heads, Lru
from gatehook.service.deferred_pins import DeferredPins
from gatehook.service.encoding import dumps
from gatehook.service.ports import FlowSource, Pin
from gatehook.settings import Settings
from gatehook.templates.registry import TemplateRegistry

__all__ = ["FlowLookup"]

log = logging.getLogger("gatehook.trigger")
_FT_INDEX = {ft: i for i, ft in enumerate(FlowType)}


class FlowLookup:
    """Cached reads of ``FlowSource`` for the trigger use case (one per ``TriggerService``)."""

    def __init__(self, flows: FlowSource, templates: TemplateRegistry, settings: Settings) -> None:
        self._flows = flows
        self._templates = templates
        self._settings = settings
        caches = settings.cache
        self.heads_cache = Heads(settings.flow_cache_ttl_s, caches.tenants)
        self._loading: dict[str, asyncio.Future[TenantHeads]] = {}  # loads under way
        self._revisions: Lru[tuple[str, FlowType, int], FlowRevision] = Lru(caches.flow_revisions)
        self._versions: Lru[tuple[str, str, str], ActionVersion] = Lru(caches.action_versions)
        self._configs: Lru[tuple[str, str, str], tuple[Any, bytes]] = Lru(caches.action_versions)
        # a pin as a tuple in FlowType order: ~300 bytes an entry instead of ~540 with a dict
        self._pins: Lru[tuple[str, str], tuple[tuple[int | None, ...], datetime]] = Lru(
            caches.signin_pins
        )
        self._cold = asyncio.Semaphore(settings.cold_reads)  # storage reads at once
        self.deferred: DeferredPins | None = None  # set by the composition root
        self.last_heads_served = 0  # requests run on a tenant's heads a change invalidated
        self._say_last = Sparse()

    def invalidate(self, tenant: str) -> None:
        """A change was broadcast for ``tenant``: reload its current revisions on next use."""
        self.heads_cache.invalidate(tenant)

    def revalidate_all(self) -> None:
        """Broadcasts may have been missed (a reconnect): reload each tenant once, at its
        next use, serving what is cached meanwhile."""
        self.heads_cache.expire_all()

    def disabled(self, tenant: str) -> dict[str, Disabled]:
        """The tenant's kill switches, as of its cached heads."""
        heads, _ = self.heads_cache.peek(tenant)
        return heads.disabled if heads is not None else {}

    def recorded(self, tenant: str, slot: str) -> list[str] | None:
        """The redacted paths of a recorded slot (``flow_type.trigger``), or None."""
        heads, _ = self.heads_cache.peek(tenant)
        return heads.recordings.get(slot) if heads is not None else None

    def cache_stats(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) of each cache."""
        return {
            name: (lru.hits, lru.misses)
            for name, lru in (
                ("flow_revisions", self._revisions),
                ("action_versions", self._versions),
                ("signin_pins", self._pins),
            )
        }

    async def heads(self, tenant: str, deadline: float | None = None) -> Pin:
        """The tenant's current revisions, cached. Past the TTL the cached ones are served
        while one load refreshes them; after a change broadcast, requests wait for that one
        load (never one query per waiting request), those with a ``deadline`` at most as long
        as a sign-in's pin (``_wait``): then they run on the last loaded ones."""
        return (await self.tenant_heads(tenant, deadline)).revisions  # (shared: read only)

    def cached_heads(self, tenant: str) -> TenantHeads | None:
        """The tenant's heads if cached and fresh (no load)."""
        heads, fresh = self.heads_cache.peek(tenant)
        return heads if fresh else None

    async def tenant_heads(self, tenant: str, deadline: float | None = None) -> TenantHeads:
        """``heads`` with the kill switches and recorded slots."""
        heads, fresh = self.heads_cache.lookup(tenant)
        if heads is not None:
            if not fresh and tenant not in self._loading:
                self._load_heads(tenant)
            return heads
        loading = self._loading.get(tenant) or self._load_heads(tenant)
        last = self.heads_cache.last(tenant) if deadline is not None else None
        if last is None or deadline is None:
            return await asyncio.shield(loading)
        # A change was broadcast, and MongoDB holds the new heads. If it does not answer in
        # time (down, hung, failing over) the request runs on the last ones, as a worker the
        # broadcast has not reached yet would: a change never fails a tenant's sign-ins.
        try:
            async with asyncio.timeout(self._wait(deadline)):
                return await asyncio.shield(loading)
        except (StorageUnavailable, TimeoutError):
            self.last_heads_served += 1
            if self._say_last.due():
                log.warning(
                    "MongoDB did not answer a reload of a tenant's flows after a change:"
                    " %d requests decided on the last loaded flows so far",
                    self.last_heads_served,
                )
            return last

    def _wait(self, deadline: float) -> float:
        """How long a request waits for MongoDB before it runs on what is cached: the
        sign-in pin's wait, at most half the time left."""
        remaining = max(deadline - time.monotonic(), 0.0)
        return min(self._settings.pin_wait_ms / 1000, remaining / 2)

    def _load_heads(self, tenant: str) -> asyncio.Future[TenantHeads]:
        """Start the one load of ``tenant``'s heads (registered before this returns)."""
        generation = self.heads_cache.generation(tenant)

        async def load() -> TenantHeads:
            try:
                async with self._cold:
                    loaded = await self._flows.tenant_heads(tenant)
            finally:
                if self._loading.get(tenant) is task:
                    del self._loading[tenant]
            self.heads_cache.put(tenant, loaded, generation)
            for ft, flow in loaded.current.items():  # (a revision never changes)
                self._revisions.put((tenant, ft, flow.revision), flow)
            return loaded

        task = asyncio.ensure_future(load())
        self._loading[tenant] = task
        task.add_done_callback(self._loaded)
        return task

    @staticmethod
    def _loaded(task: asyncio.Future[TenantHeads]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # retrieved here; requests waiting on it get the error themselves
            log.debug("loading flow heads failed: %s", task.exception())

    async def resolve(
        self, tenant: str, ft: FlowType, signin_id: str | None, deadline: float
    ) -> tuple[int | None, FlowRevision | None, bool]:
        """The revision a request runs on, its flow, and whether the sign-in's pin waits for
        MongoDB (``service.deferred_pins``). Served from the caches when they hold
        everything; otherwise the reads must be done by ``deadline`` (monotonic), else
        ``StorageUnavailable`` (retryable): a burst of cold tenants never holds a request
        past its deadline."""
        heads = self.cached_heads(tenant)
        if heads is not None:
            if signin_id is None:
                revision = heads.revisions.get(ft)
            else:
                pinned = self._pins.peek((tenant, signin_id))
                revision = (
                    pinned[0][_FT_INDEX[ft]]
                    if pinned is not None and pinned[1] > datetime.now(UTC)
                    else -1
                )
            if revision is None:
                return None, None, False
            if revision > 0:
                flow = self._revisions.get((tenant, ft, revision))
                if flow is not None:
                    return revision, flow, False
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                revision, deferred = await self._revision(tenant, ft, signin_id, deadline)
                flow = await self.flow(tenant, ft, revision) if revision is not None else None
        except TimeoutError:
            raise StorageUnavailable(
                "the tenant's flows could not be read within the request's deadline"
            ) from None
        return revision, flow, deferred

    async def _revision(
        self, tenant: str, ft: FlowType, signin_id: str | None, deadline: float
    ) -> tuple[int | None, bool]:
        if signin_id is None:
            return (await self.heads(tenant, deadline)).get(ft), False
        now = datetime.now(UTC)
        cached = self._pins.get((tenant, signin_id))
        if cached is not None and cached[1] > now:
            return cached[0][_FT_INDEX[ft]], False
        heads = await self.heads(tenant, deadline)
        ttl = timedelta(seconds=self._settings.pin_ttl_s)
        deferred = False
        try:
            wait = self._wait(deadline)
            pin_write = self._flows.pin_signin(tenant, signin_id, heads, ttl)  # grouped
            if self.deferred is None:
                pin, expires = await pin_write
            else:
                async with asyncio.timeout(wait):
                    pin, expires = await pin_write
        except (StorageUnavailable, TimeoutError):
            if self.deferred is None:
                raise StorageUnavailable("MongoDB did not store the sign-in's pin") from None
            # decided on the revisions cached as current; pinned when MongoDB is back
            pin, expires, deferred = heads, now + ttl, True
            self.deferred.add(tenant, signin_id, pin, expires)
        self._pins.put((tenant, signin_id), (tuple(pin.get(f) for f in FlowType), expires))
        return pin.get(ft), deferred

    async def flow(
        self, tenant: str, ft: FlowType, revision: int, deadline: float | None = None
    ) -> FlowRevision | None:
        """One flow revision, cached; a load must be done by ``deadline`` (``_read``)."""
        key = (tenant, ft, revision)
        flow = self._revisions.get(key)
        if flow is None:
            async with self._read(deadline, f"flow revision {ft}#{revision}"):
                flow = await self._flows.get_flow(tenant, ft, revision)
            if flow is not None:
                self._revisions.put(key, flow)
        return flow

    async def version(
        self, tenant: str, action: str, wanted: str, deadline: float | None = None
    ) -> ActionVersion | None:
        """One action version, cached; a load must be done by ``deadline`` (``_read``)."""
        key = (tenant, action, wanted)
        version = self._versions.get(key)
        if version is None:
            async with self._read(deadline, f"version {action}@{wanted}"):
                version = await self._flows.get_version(tenant, action, wanted)
            if version is not None:
                self._versions.put(key, version)
        return version

    @contextlib.asynccontextmanager
    async def _read(self, deadline: float | None, what: str) -> AsyncIterator[None]:
        """A storage read on the decision path: one of ``GATEHOOK_COLD_READS`` at once, done
        by ``deadline`` (monotonic), else ``StorageUnavailable`` (retryable), as
        ``resolve``'s reads."""
        budget = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(budget), self._cold:
                yield
        except TimeoutError:
            raise StorageUnavailable(
                f"{what} could not be read within the request's deadline"
            ) from None

    def cached_version(self, tenant: str, action: str, wanted: str) -> ActionVersion | None:
        """The version if it is cached (no load; not counted as a hit or a miss)."""
        return self._versions.peek((tenant, action, wanted))

    def config(self, version: ActionVersion) -> tuple[Any, bytes]:
        """The parsed template config (templates) and, for scripts, the input's tail: the
        config's JSON, then the action's secrets as the ``secrets`` member (when it has
        any), cached."""
        key = (version.tenant, version.action, version.version)
        cached = self._configs.get(key)
        if cached is None:
            parsed: Any = None
            if version.kind is ActionKind.TEMPLATE:
                template = self._templates.get(version.template or "")
                if template is not None:
                    parsed = template.parse_config(version.config)
            config = dumps(version.config)
            if version.secrets:  # the input's last members: "config": {...}, "secrets": {...}
                config += b',"secrets":' + dumps(version.secrets)
            cached = (parsed, config)
            self._configs.put(key, cached)
        return cached
