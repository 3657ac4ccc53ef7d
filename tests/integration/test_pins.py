"""Sign-in pins written in groups, on the real MongoDB-protocol server: new sign-ins share one
insert, a sign-in pinned elsewhere keeps its pin, an expired pin is replaced, and every
caller of one sign-in gets the same pin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from gatehook.domain.catalogue import FlowType
from gatehook.errors import StorageUnavailable
from gatehook.storage import MongoStore
from gatehook.storage.keys import bucket_of

EXT, INT = FlowType.EXTERNAL_AUTHENTICATION, FlowType.INTERNAL_AUTHENTICATION
TTL = timedelta(minutes=10)


async def test_new_signins_are_pinned_in_groups(store: MongoStore) -> None:
    pins = store._signin_pins
    results = await asyncio.gather(
        *(store.pin_signin("acme", f"s{i}", {EXT: 3, INT: None}, TTL) for i in range(40))
    )
    assert all(pin == {EXT: 3, INT: None} for pin, _ in results)
    assert all(expires > datetime.now(UTC) for _, expires in results)
    assert pins.groups == 1  # one insert for the forty, not forty (or 120 round trips)
    assert await store.bucket("pins", "acme").count_documents({"tenant": "acme"}) == 40
    # the next trigger of a pinned sign-in gets its pin, not the heads of the moment
    pin, _ = await store.pin_signin("acme", "s7", {EXT: 9, INT: 9}, TTL)
    assert pin == {EXT: 3, INT: None}


async def test_a_signin_pinned_elsewhere_keeps_its_pin_and_callers_agree(
    store: MongoStore,
) -> None:
    now = datetime.now(UTC)
    await store.bucket("pins", "acme").insert_one(  # another worker pinned this sign-in first
        {
            "_id": "acme/elsewhere",
            "tenant": "acme",
            "signin_id": "elsewhere",
            "revisions": {EXT.value: 1},
            "created_at": now,
            "expires_at": now + TTL,
        }
    )
    results = await asyncio.gather(
        store.pin_signin("acme", "elsewhere", {EXT: 2}, TTL),
        store.pin_signin("acme", "fresh", {EXT: 2}, TTL),
        store.pin_signin("acme", "fresh", {EXT: 5}, TTL),  # the same sign-in, twice at once
        store.pin_signin("other", "elsewhere", {EXT: 4}, TTL),  # another tenant's sign-in
    )
    assert [pin for pin, _ in results] == [{EXT: 1}, {EXT: 2}, {EXT: 2}, {EXT: 4}]
    assert sum([await c.count_documents({}) for c in store.buckets("pins")]) == 3


async def test_an_expired_pin_is_replaced(store: MongoStore) -> None:
    then = datetime.now(UTC) - timedelta(hours=1)
    await store.bucket("pins", "acme").insert_one(
        {
            "_id": "acme/old",
            "tenant": "acme",
            "signin_id": "old",
            "revisions": {EXT.value: 1},
            "created_at": then,
            "expires_at": then + timedelta(minutes=1),
        }
    )
    pin, expires = await store.pin_signin("acme", "old", {EXT: 6}, TTL)
    assert pin == {EXT: 6}
    assert expires > datetime.now(UTC)
    stored = await store.bucket("pins", "acme").find_one({"_id": "acme/old"})
    assert stored is not None
    assert stored["revisions"] == {EXT.value: 6}


async def test_a_stopped_writer_leaves_nobody_waiting(store: MongoStore) -> None:
    """The writer cancelled mid-group (the worker stopping): its callers get an error
    instead of waiting for ever, and the next pin starts a new writer."""
    waiting = [
        asyncio.create_task(store.pin_signin("acme", f"c{i}", {EXT: 1}, TTL)) for i in range(3)
    ]
    await asyncio.sleep(0)
    writer = store._signin_pins._writer
    assert writer is not None
    writer.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert all(isinstance(r, StorageUnavailable) for r in results), results
    pin, _ = await store.pin_signin("acme", "after", {EXT: 2}, TTL)
    assert pin == {EXT: 2}


async def test_expired_pins_and_windows_are_swept(store: MongoStore) -> None:
    """Where the server has no TTL indexes (FerretDB), workers sweep what has expired."""
    now = datetime.now(UTC)
    pins = store.bucket("pins", "acme")
    for name, expires in (("gone", now - TTL), ("kept", now + TTL)):
        await pins.insert_one(
            {"_id": f"acme/{name}", "tenant": "acme", "signin_id": name, "expires_at": expires}
        )
    await store.counters.insert_many(
        [
            {"_id": "w/old/0", "w": "w/old", "rid": "r1", "expires_at": now - TTL},
            {"_id": "w/new/0", "w": "w/new", "rid": "r2", "expires_at": now + TTL},
        ]
    )
    removed = await store.sweep_expired(bucket_of("acme"), now)
    if bucket_of("acme") != 0:  # the windows go with bucket 0's sweep
        removed += await store.sweep_expired(0, now)
    assert removed == 2
    assert [d["_id"] async for d in pins.find({})] == ["acme/kept"]
    assert [d["_id"] async for d in store.counters.find({})] == ["w/new/0"]
