"""The flows and action versions a trigger request needs, through the hot path's caches:
a tenant's current revisions (single-flight loads, served stale while one refresh runs), the
revisions pinned per sign-in, flow revisions, action versions and their parsed configs."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from gatehook.domain.catalogue import FlowType
from gatehook.domain.model import ActionKind, ActionVersion, Disabled, FlowRevision
from gatehook.service.cache import Heads, Lru
from gatehook.service.encoding import dumps
from gatehook.service.ports import FlowSource, Pin
from gatehook.settings import Settings
from gatehook.templates.registry import TemplateRegistry

__all__ = ["FlowLookup"]

log = logging.getLogger("gatehook.trigger")


class FlowLookup:
    """Cached reads of ``FlowSource`` for the trigger use case (one per ``TriggerService``)."""

    def __init__(self, flows: FlowSource, templates: TemplateRegistry, settings: Settings) -> None:
        self._flows = flows
        self._templates = templates
        self._settings = settings
        self.heads_cache = Heads(settings.flow_cache_ttl_s)
        self.disabled: dict[str, dict[str, Disabled]] = {}  # kill switches, with the heads
        self.recorded: dict[str, dict[str, list[str]]] = {}  # tenant -> slot -> redacted paths
        self._loading: dict[str, asyncio.Future[Pin]] = {}  # heads loads under way, by tenant
        self._revisions: Lru[tuple[str, FlowType, int], FlowRevision] = Lru(4096)
        self._versions: Lru[tuple[str, str, str], ActionVersion] = Lru(8192)
        self._configs: Lru[tuple[str, str, str], tuple[Any, bytes]] = Lru(8192)
        self._pins: Lru[tuple[str, str], tuple[Pin, datetime]] = Lru(100_000)

    def invalidate(self, tenant: str) -> None:
        """A change was broadcast for ``tenant``: reload its current revisions on next use."""
        self.heads_cache.invalidate(tenant)

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

    async def heads(self, tenant: str) -> Pin:
        """The tenant's current revisions, cached. Past the TTL the cached ones are served
        while one load refreshes them; after a change broadcast, requests wait for that one
        load (never one query per waiting request)."""
        heads, fresh = self.heads_cache.lookup(tenant)
        if heads is not None:
            if not fresh and tenant not in self._loading:
                self._load_heads(tenant)
            return heads
        loading = self._loading.get(tenant) or self._load_heads(tenant)
        return await asyncio.shield(loading)

    def _load_heads(self, tenant: str) -> asyncio.Future[Pin]:
        """Start the one load of ``tenant``'s heads (registered before this returns)."""
        generation = self.heads_cache.generation(tenant)

        async def load() -> Pin:
            try:
                heads, disabled, recorded = await asyncio.gather(
                    self._flows.current_revisions(tenant),
                    self._flows.disabled_actions(tenant),
                    self._flows.recordings(tenant),
                )
            finally:
                if self._loading.get(tenant) is task:
                    del self._loading[tenant]
            if self.heads_cache.generation(tenant) == generation:
                self.disabled[tenant] = disabled
                self.recorded[tenant] = recorded
            self.heads_cache.put(tenant, heads, generation)
            return heads

        task = asyncio.ensure_future(load())
        self._loading[tenant] = task
        task.add_done_callback(self._loaded)
        return task

    @staticmethod
    def _loaded(task: asyncio.Future[Pin]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # retrieved here; requests waiting on it get the error themselves
            log.debug("loading flow heads failed: %s", task.exception())

    async def revision(self, tenant: str, ft: FlowType, signin_id: str | None) -> int | None:
        if signin_id is None:
            return (await self.heads(tenant)).get(ft)
        now = datetime.now(UTC)
        cached = self._pins.get((tenant, signin_id))
        if cached is not None and cached[1] > now:
            return cached[0].get(ft)
        heads = await self.heads(tenant)
        ttl = timedelta(seconds=self._settings.pin_ttl_s)
        pin, expires = await self._flows.pin_signin(tenant, signin_id, heads, ttl)
        self._pins.put((tenant, signin_id), (pin, expires))
        return pin.get(ft)

    async def flow(self, tenant: str, ft: FlowType, revision: int) -> FlowRevision | None:
        key = (tenant, ft, revision)
        flow = self._revisions.get(key)
        if flow is None:
            flow = await self._flows.get_flow(tenant, ft, revision)
            if flow is not None:
                self._revisions.put(key, flow)
        return flow

    async def version(self, tenant: str, action: str, wanted: str) -> ActionVersion | None:
        key = (tenant, action, wanted)
        version = self._versions.get(key)
        if version is None:
            version = await self._flows.get_version(tenant, action, wanted)
            if version is not None:
                self._versions.put(key, version)
        return version

    def cached_version(self, tenant: str, action: str, wanted: str) -> ActionVersion | None:
        """The version if it is cached (no load; not counted as a hit or a miss)."""
        return self._versions.peek((tenant, action, wanted))

    def config(self, version: ActionVersion) -> tuple[Any, bytes]:
        """The parsed template config (templates) and the config's JSON (scripts), cached."""
        key = (version.tenant, version.action, version.version)
        cached = self._configs.get(key)
        if cached is None:
            parsed: Any = None
            if version.kind is ActionKind.TEMPLATE:
                template = self._templates.get(version.template or "")
                if template is not None:
                    parsed = template.parse_config(version.config)
            cached = (parsed, dumps(version.config))
            self._configs.put(key, cached)
        return cached
