"""A worker of a platform with many tenants: it warms the recently active ones before it
takes requests, records which tenants it served, and revalidates its caches once after a
NATS reconnect."""

from __future__ import annotations

from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from gatehook.admin.service import AdminService
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from tests.support.tenants import attach, custom, request, trigger
from tests.support.workers import start_worker, stop_worker


async def test_a_starting_worker_warms_recent_tenants_and_serves_them_from_cache(
    settings: Settings, pool: SandboxPool, nc: NATS, admin: AdminService, store: MongoStore
) -> None:
    tenants = [f"warm{i}" for i in range(3)]
    for i, tenant in enumerate(tenants):
        source = f"export async function execute(input) {{ return {{kind: 'continue', claims: {{n: {i}}}}}; }}"
        v = await custom(admin, tenant, "tag", source)
        await attach(admin, tenant, [("tag", v)])
    now = datetime.now(UTC)  # another worker served the first two; the third was quiet
    await store.record_activity("earlier-worker", dict.fromkeys(tenants[:2], now))
    runtime, broker = await start_worker(settings, pool)
    try:
        report = runtime.warm_report
        assert report is not None
        assert report.complete
        assert (report.tenants, report.versions, report.scripts) == (2, 2, 2)
        lookup = runtime.triggers.lookup
        assert lookup.cached_heads("warm0") is not None
        assert lookup.cached_heads("warm2") is None
        misses = lookup.cache_stats()["action_versions"][1]
        reply = await trigger(nc, "warm1", request())
        assert reply["claims"] == {"n": 1}
        assert lookup.cache_stats()["action_versions"][1] == misses  # served from the warm-up
        reply = await trigger(nc, "warm2", request())  # not warmed: loaded on first use
        assert reply["claims"] == {"n": 2}
        await runtime.flush_activity()
        since = datetime.fromtimestamp(0, UTC)
        assert set(await store.active_tenants(since, 10)) == set(tenants)
        # after a reconnect every cached tenant is stale once (served while reloaded)
        runtime.reconnected()
        assert lookup.cached_heads("warm0") is None
        assert (await trigger(nc, "warm0", request()))["claims"] == {"n": 0}
    finally:
        await stop_worker(runtime, broker)
