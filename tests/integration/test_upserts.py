"""Writers racing on one document, on the real MongoDB-protocol server: FerretDB answers the
loser of two simultaneous upserts of one ``_id`` with E11000, where MongoDB retries it itself.
Workers starting together on a fresh database, and one worker's two activity writes, must
both succeed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from gatehook.settings import Settings
from gatehook.storage import MongoStore


def _store(settings: Settings, database: str) -> MongoStore:
    return MongoStore.connect(settings.mongodb_url, database, timeout_ms=5000)


async def test_workers_starting_together_on_a_fresh_database_all_start(
    settings: Settings,
) -> None:
    """Eight rounds of four stores preparing one fresh database at once (the layout marker,
    the indexes): none fails, and the marker is written once."""
    for _ in range(8):
        database = f"gh_race_{uuid.uuid4().hex[:10]}"
        stores = [_store(settings, database) for _ in range(4)]
        try:
            results = await asyncio.gather(
                *(s.ensure_indexes() for s in stores), return_exceptions=True
            )
            assert [r for r in results if isinstance(r, BaseException)] == []
            assert await stores[0].meta.count_documents({"_id": "layout"}) == 1
        finally:
            await stores[0]._client.drop_database(database)
            for s in stores:
                await s.aclose()


async def test_simultaneous_activity_writes_of_one_worker_both_land(store: MongoStore) -> None:
    """A worker's periodic activity write and its closing one at once: both succeed, the
    document holds one of them whole."""
    now = datetime.now(UTC)
    for round_ in range(8):
        worker = f"w{round_}"
        results = await asyncio.gather(
            store.record_activity(worker, {"acme": now}),
            store.record_activity(worker, {"globex": now}),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        doc = await store.activity.find_one({"_id": worker})
        assert doc is not None
        assert [t["t"] for t in doc["tenants"]] in (["acme"], ["globex"])
