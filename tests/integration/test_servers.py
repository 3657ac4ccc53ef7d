"""The test servers are real, and every test starts with an empty database and no streams."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from gatehook.storage import MongoStore
from tests.support.workers import Servers

_seen: dict[str, str] = {}


async def test_round_trip_to_each_server(servers: Servers, nc: NATS, store: MongoStore) -> None:
    assert servers.nats_version.startswith("nats-server: v")
    print(f"\nnats-server: {servers.nats_version}; MongoDB protocol: {servers.mongo_version}")
    sub = await nc.subscribe("ping.test")
    await nc.publish("ping.test", b"hello")
    assert (await sub.next_msg(timeout=5)).data == b"hello"
    info = nc._server_info  # what the server said in its INFO line
    assert str(info.get("version", "")) in servers.nats_version
    assert info.get("jetstream") is True
    await store.actions.insert_one({"tenant": "x", "name": "y"})
    assert await store.actions.find_one({"tenant": "x"}, {"_id": 0}) == {"tenant": "x", "name": "y"}
    version = await store.server_version()
    assert version.split(" ")[0] in servers.mongo_version


async def test_a_writes(nc: NATS, store: MongoStore) -> None:
    js = nc.jetstream()
    await js.add_stream(name="LEFTOVER", subjects=["leftover.>"])
    await js.publish("leftover.x", b"1")
    await store.actions.insert_one({"tenant": "leftover"})
    _seen["db"] = store._db.name


async def test_b_sees_nothing_of_a(servers: Servers, nc: NATS, store: MongoStore) -> None:
    assert _seen["db"] != store._db.name
    for name in ("actions", "action_versions", "flows", "signin_pins", "counters"):
        assert await store._db[name].count_documents({}) == 0
    assert [s.config.name for s in await nc.jetstream().streams_info()] == []
    # and the earlier test's database is gone
    names = await store._client.list_database_names()
    assert _seen["db"] not in names
