"""The stored layout's one-time migration: tenant buckets and natural keys.

Databases written before ``storage.keys`` hold actions, versions and flow revisions in one
collection each, under ObjectIds, found by filters that FerretDB answers by reading every
row, and derive a tenant's current revisions by sorting its flows. ``migrate`` builds every
tenant's document from them, then copies each document into its tenant's bucket under its
key (the copy first, then the original is removed: a stop in between leaves both, and the
next start finishes). A marker in ``meta`` makes it run once; every step is idempotent, so
workers that start together may all run it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError, OperationFailure

from gatehook.storage.keys import action_id, flow_id, version_id
from gatehook.storage.upsert import upserted

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from gatehook.storage.mongo import MongoStore

Doc = dict[str, Any]

__all__ = ["LAYOUT", "migrate"]

log = logging.getLogger("gatehook.storage")
LAYOUT = 2  # the stored layout this code reads
_REPLACED = {
    "actions": "tenant_name",
    "action_versions": "tenant_action_version",
    "flows": "tenant_flow_revision",
}


async def migrate(store: MongoStore) -> None:
    """Bring the database to ``LAYOUT`` (nothing when it is there already)."""
    marker = await store.meta.find_one({"_id": "layout"})
    if marker is not None and int(marker.get("version", 0)) >= LAYOUT:
        return
    await _tenant_documents(store)  # first: built from what has not moved yet
    kids = [k for k in await store.versions.distinct("sealed_kid") if k]
    if kids:
        await upserted(
            lambda: store.meta.update_one(
                {"_id": "sealing"}, {"$addToSet": {"kids": {"$each": kids}}}, upsert=True
            )
        )
    moved = await _move(
        store, store.actions, "actions", lambda d: action_id(d["tenant"], d["name"])
    )
    versions: dict[tuple[str, str], set[str]] = {}
    async for doc in store.versions.find({}, {"tenant": 1, "action": 1, "version": 1}):
        versions.setdefault((doc["tenant"], doc["action"]), set()).add(doc["version"])
    for (tenant, action), names in versions.items():
        await store.bucket("actions", tenant).update_one(
            {"_id": action_id(tenant, action)},
            {"$addToSet": {"versions": {"$each": sorted(names)}}},
        )
    moved += await _move(
        store,
        store.versions,
        "versions",
        lambda d: version_id(d["tenant"], d["action"], d["version"]),
    )
    moved += await _move(
        store,
        store.flows,
        "flows",
        lambda d: flow_id(d["tenant"], d["flow_type"], int(d["revision"])),
    )
    moved += await _move(store, store.pins, "pins", lambda d: str(d["_id"]))
    await store.recorded_slots.delete_many({})  # (kept on the tenant documents now)
    await upserted(
        lambda: store.meta.update_one({"_id": "layout"}, {"$set": {"version": LAYOUT}}, upsert=True)
    )
    if moved:
        log.info("stored layout %d: %d documents moved to their tenant buckets", LAYOUT, moved)


async def _move(
    store: MongoStore, legacy: AsyncCollection[Doc], kind: str, key: Callable[[Doc], str]
) -> int:
    """Copy each document of ``legacy`` into its tenant's bucket under its key, then remove
    it from ``legacy``."""
    with contextlib.suppress(OperationFailure):  # never created, or dropped already
        await legacy.drop_index(_REPLACED.get(legacy.name, "none"))
    moved = 0
    async for doc in legacy.find({}):
        copy = {**doc, "_id": key(doc)}
        with contextlib.suppress(DuplicateKeyError):  # copied by an earlier run
            await store.bucket(kind, doc["tenant"]).insert_one(copy)
        await legacy.delete_one({"_id": doc["_id"]})
        moved += 1
    return moved


async def _tenant_documents(store: MongoStore) -> None:
    """Every tenant's document, from the legacy collections."""
    tenants: dict[str, dict[str, Any]] = {}

    def tenant(name: str) -> dict[str, Any]:
        return tenants.setdefault(name, {"flows": {}, "actions": set(), "disabled": {}})

    async for doc in store.flows.find({}, {"tenant": 1, "flow_type": 1, "revision": 1}):
        flows = tenant(doc["tenant"])["flows"]
        flows[doc["flow_type"]] = max(flows.get(doc["flow_type"], 0), int(doc["revision"]))
    async for doc in store.actions.find({}, {"tenant": 1, "name": 1, "disabled": 1}):
        entry = tenant(doc["tenant"])
        entry["actions"].add(doc["name"])
        if doc.get("disabled"):
            entry["disabled"][doc["name"]] = doc["disabled"]
    async for doc in store.recorded_slots.find({}):
        ft, _, trigger = str(doc["slot"]).partition(".")
        tenant(doc["tenant"]).setdefault("recordings", {}).setdefault(ft, {})[trigger] = list(
            doc.get("redact") or []
        )
    for name, entry in tenants.items():
        change: dict[str, Any] = {
            "$max": {f"flows.{ft}": rev for ft, rev in entry["flows"].items()},
            "$addToSet": {"actions": {"$each": sorted(entry["actions"])}},
            "$set": {f"disabled.{n}": d for n, d in entry["disabled"].items()},
        }
        for ft, triggers in (entry.get("recordings") or {}).items():
            for trigger, paths in triggers.items():
                change["$set"][f"recordings.{ft}.{trigger}"] = paths
        update = {op: v for op, v in change.items() if v}
        bucket = store.bucket("tenants", name)
        await upserted(partial(bucket.update_one, {"_id": name}, update, upsert=True))
