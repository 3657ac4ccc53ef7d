"""The MongoDB adapter (PyMongo's async API): actions, versions, flow revisions, sign-in pins.

Every document's ``_id`` is its natural key, in a collection of its tenant's bucket
(``storage.keys``), so every read on the decision path is one ``_id`` lookup in a collection
holding a share of the tenants: MongoDB answers it from the ``_id`` index, FerretDB v1 by
reading that bucket's rows, and its cost does not grow with the whole platform. A tenant's
document says what its decisions start from (the newest revision of each flow type with a
copy of it, the kill switches, the recorded slots) and lists its actions; an action's lists
its versions. The unique ``_id`` is also how concurrent flow changes are serialised without
transactions: a new revision is an insert of ``revision + 1`` that fails if someone else
inserted it first. Expiry is checked in queries; TTL indexes are created where the server
has them, and workers sweep expired pins where it has none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from gatehook.domain.auth0 import bounded_cache_writes
from gatehook.domain.catalogue import FlowType
from gatehook.domain.model import ActionDef, ActionVersion, Disabled, FlowRevision, TenantHeads
from gatehook.errors import ConfigError, Conflict, StorageError, StorageUnavailable
from gatehook.security.sealing import Sealer, SealingError, is_sealed
from gatehook.storage.keys import (
    BUCKETS,
    KINDS,
    action_id,
    bucket_name,
    bucket_of,
    flow_id,
    pin_id,
    version_id,
)
from gatehook.storage.migrate import migrate
from gatehook.storage.pins import SigninPins
from gatehook.storage.upsert import upserted

__all__ = ["MongoStore", "Pin"]

log = logging.getLogger("gatehook.storage")
T = TypeVar("T")
Doc = dict[str, Any]
Pin = dict[FlowType, int | None]


class MongoStore:
    """Storage port's production adapter. One instance per event loop; ``aclose()`` it."""

    def __init__(
        self,
        client: AsyncMongoClient[Doc],
        database: str,
        *,
        sealer: Sealer | None = None,
        secret_fields: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._client = client
        self._sealer = sealer  # None: tenants' secrets are stored in clear
        self._secret_fields = dict(secret_fields or {})  # template -> its secret config fields
        self._db: AsyncDatabase[Doc] = client[database]
        # where databases written before the tenant buckets kept these (``storage.migrate``)
        self.actions = self._db["actions"]
        self.versions = self._db["action_versions"]
        self.flows = self._db["flows"]
        self.pins = self._db["signin_pins"]  # (moved to the tenant buckets: ``storage.migrate``)
        self.counters = self._db["counters"]
        self.rollout_counts = self._db["rollout_counts"]
        self.recorded_slots = self._db["recordings"]
        self.meta = self._db["meta"]
        self.activity = self._db["worker_activity"]
        self.ingress = self._db["ingress"]  # one document per tenant: providers and secrets
        self._buckets = {
            kind: [self._db[bucket_name(kind, b)] for b in range(BUCKETS)] for kind in KINDS
        }
        self._kids_noted: set[str] = set()
        self.has_ttl = True  # (False once ensure_indexes finds the server has no TTL indexes)
        self._signin_pins = SigninPins(lambda tenant: self.bucket("pins", tenant), self._guard)

    @classmethod
    def connect(
        cls,
        url: str,
        database: str,
        *,
        timeout_ms: int = 2000,
        sealer: Sealer | None = None,
        secret_fields: Mapping[str, tuple[str, ...]] | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> MongoStore:
        """A store on a new client (connects lazily; fails fast when the server is away).
        ``client_options`` go to the client as they are (TLS: ``security.connections``)."""
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms * 2, 1000),
            tz_aware=True,
            appname="gatehook",
            **dict(client_options or {}),
        )
        return cls(client, database, sealer=sealer, secret_fields=secret_fields)

    async def aclose(self) -> None:
        """Close the client."""
        await self._client.close()

    async def _upsert(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op``, an upsert of one ``_id``, guarded like every operation (see ``upserted``)."""
        return await self._guard(lambda: upserted(op))

    async def _guard(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            return await op()
        except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
            raise StorageUnavailable(f"MongoDB unavailable: {exc.__class__.__name__}") from exc
        except DuplicateKeyError:
            raise
        except PyMongoError as exc:
            raise StorageError(f"MongoDB error: {exc}") from exc

    async def server_version(self) -> str:
        """The server's reported version (FerretDB reports the MongoDB version it mimics)."""
        info = await self._guard(lambda: self._db.command("buildInfo"))
        version = str(info.get("version"))
        ferret = info.get("ferretdbVersion")
        return f"{version} (FerretDB {ferret})" if ferret else version

    async def ping(self) -> None:
        """Round trip to the server; raises ``StorageUnavailable`` if it is away."""
        await self._guard(lambda: self._db.command("ping"))

    async def ensure_indexes(self) -> None:
        """Create the indexes (idempotent). TTL indexes only where the server supports them."""

        async def create() -> None:
            # actions, versions and flows are unique by their ``_id`` (``storage.keys``)
            await self.counters.create_index(
                [("w", ASCENDING), ("rid", ASCENDING)], unique=True, name="window_request"
            )
            await self.rollout_counts.create_index(
                [("tenant", ASCENDING), ("rollout", ASCENDING)], name="tenant_rollout"
            )

        await self._guard(create)
        await migrate(self)
        for coll in (*self._buckets["pins"], self.counters, self.activity):
            try:
                await coll.create_index("expires_at", expireAfterSeconds=0, name="ttl")
            except OperationFailure as exc:
                log.info(
                    "no TTL indexes (%s): expiry is checked in queries, and workers sweep"
                    " expired pins and rate-limit windows",
                    exc.code,
                )
                self.has_ttl = False
                break  # the server has none (FerretDB): the other collections neither
            except PyMongoError as exc:
                raise StorageUnavailable(f"MongoDB unavailable: {exc}") from exc

    # -- reads on the hot path ---------------------------------------------------------------
    async def get_version(self, tenant: str, action: str, version: str) -> ActionVersion | None:
        """One action version of ``tenant``, or None."""
        key = version_id(tenant, action, version)
        doc = await self._guard(lambda: self.bucket("versions", tenant).find_one({"_id": key}))
        return None if doc is None else self._version(doc)

    async def tenant_heads(self, tenant: str) -> TenantHeads:
        """What ``tenant``'s decisions start from, in one read (nothing: no flows)."""
        doc = await self._guard(lambda: self.bucket("tenants", tenant).find_one({"_id": tenant}))
        return _heads(doc or {})

    async def current_revisions(self, tenant: str) -> Pin:
        """The newest revision of each flow type of ``tenant`` (None where it has no flow)."""
        return (await self.tenant_heads(tenant)).revisions

    async def get_flow(
        self, tenant: str, flow_type: FlowType, revision: int
    ) -> FlowRevision | None:
        """One revision of a tenant's flow, or None."""
        key = flow_id(tenant, flow_type, revision)
        doc = await self._guard(lambda: self.bucket("flows", tenant).find_one({"_id": key}))
        return None if doc is None else _flow(doc)

    async def pin_signin(
        self, tenant: str, signin_id: str, current: Pin, ttl: timedelta
    ) -> tuple[Pin, datetime]:
        """The revisions a sign-in runs on: pinned at its first trigger to ``current``.

        Returns the pin and when it expires. Concurrent first triggers agree: the insert that
        loses to the unique ``_id`` reads the winner's pin. Pins are written in groups
        (``storage.pins``).
        """
        return await self._signin_pins.pin(tenant, signin_id, current, ttl)

    # -- tenants' activity (a starting worker warms the recently active) -------------------
    async def record_activity(self, worker: str, seen: Mapping[str, datetime]) -> None:
        """Replace ``worker``'s record of the tenants it served and when each last was.

        One document per worker, written whole: one write per report however many tenants
        it served (a document per tenant would be a write per tenant, each of which reads
        the whole collection on FerretDB)."""
        latest = max(seen.values(), default=datetime.now(UTC))
        doc = {
            "_id": worker,
            "at": latest,
            "tenants": [{"t": t, "at": at} for t, at in seen.items()],
            "expires_at": latest + timedelta(days=7),  # (a TTL index reclaims it where it can)
        }
        await self._upsert(lambda: self.activity.replace_one({"_id": worker}, doc, upsert=True))

    async def active_tenants(self, since: datetime, limit: int) -> list[str]:
        """The tenants served by any worker since ``since``, most recent first (a read of
        every worker's record: done at start-up, never per request)."""

        async def op() -> list[Doc]:
            return await self.activity.find({"at": {"$gte": since}}).to_list()

        last: dict[str, datetime] = {}
        for doc in await self._guard(op):
            for entry in doc.get("tenants") or []:
                tenant, at = entry["t"], entry["at"]
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                if at >= since and (tenant not in last or at > last[tenant]):
                    last[str(tenant)] = at
        return sorted(last, key=lambda t: last[t], reverse=True)[:limit]

    async def store_pins(self, pins: list[tuple[str, str, Pin, datetime]]) -> None:
        """Insert each (tenant, signin_id, pin, expires) unless the sign-in is pinned
        already (a pin stored meanwhile keeps its revisions): the deferred pins' write."""
        now = datetime.now(UTC)
        docs = [
            {
                "_id": pin_id(tenant, signin),
                "tenant": tenant,
                "signin_id": signin,
                "revisions": {ft.value: rev for ft, rev in pin.items()},
                "created_at": now,
                "expires_at": expires,
                "deferred": True,
            }
            for tenant, signin, pin, expires in pins
        ]

        by_bucket: dict[int, list[Doc]] = {}
        for (tenant, _, _, _), doc in zip(pins, docs, strict=True):
            by_bucket.setdefault(bucket_of(tenant), []).append(doc)

        async def insert(bucket: int, group: list[Doc]) -> None:
            try:
                await self._buckets["pins"][bucket].insert_many(group, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise

        await self._guard(
            lambda: asyncio.gather(*(insert(b, group) for b, group in by_bucket.items()))
        )

    async def sweep_expired(self, bucket: int, now: datetime) -> int:
        """Delete the expired pins of one bucket (and, with bucket 0, the expired rate-limit
        windows): what TTL indexes do where the server has them. How many went."""
        gone = await self._guard(
            lambda: self._buckets["pins"][bucket % BUCKETS].delete_many(
                {"expires_at": {"$lt": now}}
            )
        )
        count = int(gone.deleted_count)
        if bucket % BUCKETS == 0:
            windows = await self._guard(
                lambda: self.counters.delete_many({"expires_at": {"$lt": now}})
            )
            count += int(windows.deleted_count)
        return count

    # -- rate-limit counters -------------------------------------------------------------
    async def hit(
        self, key: str, window_start: int, window_s: int, limit: int, request_id: str
    ) -> tuple[bool, int]:
        """Count ``request_id`` in a fixed window, at most once; allowed while slots remain.

        A window has ``limit`` slots, documents ``<key>/<window>/<n>`` for n < limit, taken by
        inserting them: a unique ``_id`` lets one request take a slot, and a unique
        (window, request id) lets a request hold one slot at most, however often it is sent.
        Correctness rests only on inserts and unique indexes, which MongoDB and FerretDB both
        make atomic (a read-then-update would not be, on FerretDB), so exactly ``limit``
        requests pass per window across all workers. Which slot to try first comes from a
        per-window ticket counter; it is only a hint (a lost increment means one more
        collision, never a wrong answer), so a request costs two round trips, not a count.
        """
        window = f"{key}/{window_start}"
        expires = datetime.fromtimestamp(window_start + window_s, UTC)

        async def held() -> bool:
            return await self.counters.find_one({"w": window, "rid": request_id}) is not None

        async def take(n: int) -> bool | None:
            """True: slot n is ours. False: taken by another. None: we hold one already."""
            doc = {"_id": f"{window}/{n}", "w": window, "rid": request_id, "expires_at": expires}
            try:
                await self.counters.insert_one(doc)
                return True
            except DuplicateKeyError:
                return None if await held() else False

        async def draw() -> Doc | None:
            for _ in range(5):  # two first requests may race to create the ticket document
                try:
                    return await self.counters.find_one_and_update(
                        {"_id": f"{window}/next"},
                        {"$inc": {"n": 1}, "$set": {"expires_at": expires}},
                        upsert=True,
                        return_document=ReturnDocument.BEFORE,
                    )
                except DuplicateKeyError:
                    continue
            raise StorageError("rate-limit ticket kept colliding; try again")

        async def op() -> tuple[bool, int]:
            ticket = await draw()
            n = int(ticket["n"]) if ticket else 0
            if ticket is not None and ticket.get("full"):
                return await held(), limit  # slots are never freed within a window
            for slot in range(n, limit):  # the common case: the ticket's slot is free
                got = await take(slot)
                if got is not False:
                    return True, slot + 1
            # Tickets ran out (retries and lost increments also draw them): look for a gap.
            if await held():
                return True, limit
            taken = {
                int(str(d["_id"]).rsplit("/", 1)[1])
                async for d in self.counters.find(
                    {"w": window, "rid": {"$exists": True}}, {"_id": 1}
                )
            }
            for slot in (s for s in range(limit) if s not in taken):
                got = await take(slot)
                if got is not False:
                    return True, slot + 1
            await self.counters.update_one({"_id": f"{window}/next"}, {"$set": {"full": True}})
            return False, limit

        return await self._guard(op)

    # -- writes (management) -------------------------------------------------------------
    async def insert_flow(self, flow: FlowRevision) -> None:
        """Insert a new flow revision; ``Conflict`` when that revision number exists already.
        It becomes current with ``advance_flow`` (once its change is audited)."""
        doc = flow.model_dump(mode="json")
        doc["_id"] = flow_id(flow.tenant, flow.flow_type, flow.revision)
        doc["created_at"] = flow.created_at
        try:
            await self._guard(lambda: self.bucket("flows", flow.tenant).insert_one(doc))
        except DuplicateKeyError as exc:
            raise Conflict(
                f"flow {flow.flow_type} of {flow.tenant} moved on; revision {flow.revision} exists"
            ) from exc

    async def advance_flow(
        self, tenant: str, flow_type: FlowType, revision: int, flow: FlowRevision | None = None
    ) -> None:
        """Make ``revision`` the flow's current one on the tenant's document (never back),
        with a copy of ``flow`` (that revision) beside it: a cold tenant's decision reads
        its heads and its flow in one lookup. Two changes advancing out of order may leave
        the copy one revision behind; readers use it only when its revision is current."""
        change: Doc = {"$max": {f"flows.{flow_type.value}": revision}}
        if flow is not None and flow.revision == revision:
            change["$set"] = {f"current.{flow_type.value}": flow.model_dump(mode="json")}
        await self._upsert(
            lambda: self.bucket("tenants", tenant).update_one({"_id": tenant}, change, upsert=True)
        )

    async def delete_flow(self, tenant: str, flow_type: FlowType, revision: int) -> None:
        """Remove a revision that never became current (its change was not audited)."""
        key = flow_id(tenant, flow_type, revision)
        await self._guard(lambda: self.bucket("flows", tenant).delete_one({"_id": key}))

    async def latest_flow(self, tenant: str, flow_type: FlowType) -> FlowRevision | None:
        """The newest revision of one flow of ``tenant``.

        A revision inserted and audited whose writer stopped before it advanced the tenant's
        document is found here (the next number exists) and made current."""
        heads = await self.tenant_heads(tenant)
        revision = heads.revisions.get(flow_type) or 0
        while True:
            current, after = await asyncio.gather(
                self.get_flow(tenant, flow_type, revision) if revision else _none(),
                self.get_flow(tenant, flow_type, revision + 1),
            )
            if after is None:
                return current
            revision += 1
            log.warning("flow %s of %s: revision %d made current", flow_type, tenant, revision)
            await self.advance_flow(tenant, flow_type, revision)

    async def flow_history(
        self, tenant: str, flow_type: FlowType, limit: int = 50
    ) -> list[FlowRevision]:
        """Revisions of one flow, newest first (revisions are numbered without gaps)."""
        newest = await self.latest_flow(tenant, flow_type)
        if newest is None or limit < 1:
            return []
        older = range(newest.revision - 1, max(newest.revision - limit, 0), -1)
        found = await asyncio.gather(*(self.get_flow(tenant, flow_type, r) for r in older))
        return [newest, *(f for f in found if f is not None)][:limit]

    async def insert_action(self, action: ActionDef) -> None:
        """Create an action; ``Conflict`` when the name is taken in the tenant."""
        doc = action.model_dump(mode="json")
        doc["_id"] = action_id(action.tenant, action.name)
        doc["created_at"] = action.created_at
        # Listed first: a name listed without its document (the insert never came) is skipped
        # by ``list_actions``; a document never listed would be lost to it.
        await self._upsert(
            lambda: self.bucket("tenants", action.tenant).update_one(
                {"_id": action.tenant}, {"$addToSet": {"actions": action.name}}, upsert=True
            )
        )
        try:
            await self._guard(lambda: self.bucket("actions", action.tenant).insert_one(doc))
        except DuplicateKeyError as exc:
            raise Conflict(f"action {action.name} exists already") from exc

    async def delete_action(self, tenant: str, name: str) -> None:
        """Remove an action whose creation was not audited (it has no version yet)."""
        key = action_id(tenant, name)
        await self._guard(lambda: self.bucket("actions", tenant).delete_one({"_id": key}))
        await self._guard(
            lambda: self.bucket("tenants", tenant).update_one(
                {"_id": tenant}, {"$pull": {"actions": name}}
            )
        )

    async def get_action(self, tenant: str, name: str) -> ActionDef | None:
        """One action of ``tenant``, or None."""
        key = action_id(tenant, name)
        doc = await self._guard(lambda: self.bucket("actions", tenant).find_one({"_id": key}))
        return None if doc is None else ActionDef.model_validate(doc)

    async def list_actions(self, tenant: str) -> list[ActionDef]:
        """Every action of ``tenant``, by name."""
        doc = await self._guard(
            lambda: self.bucket("tenants", tenant).find_one({"_id": tenant}, {"actions": 1})
        )
        names = sorted(set((doc or {}).get("actions") or []))
        found = await asyncio.gather(*(self.get_action(tenant, n) for n in names))
        return [a for a in found if a is not None]

    async def set_action_metadata(self, tenant: str, name: str, fields: dict[str, Any]) -> None:
        """Replace some of an action's own metadata (display name, description, compatible
        triggers and slots, config schema)."""
        key = action_id(tenant, name)
        await self._guard(
            lambda: self.bucket("actions", tenant).update_one({"_id": key}, {"$set": fields})
        )

    async def set_disabled(self, tenant: str, name: str, disabled: Disabled | None) -> None:
        """Throw (or, with None, release) an action's kill switch."""
        value = None if disabled is None else disabled.model_dump(mode="json")
        key = action_id(tenant, name)
        await self._guard(
            lambda: self.bucket("actions", tenant).update_one(
                {"_id": key}, {"$set": {"disabled": value}}
            )
        )
        change: Doc = (
            {"$unset": {f"disabled.{name}": ""}}
            if value is None
            else {"$set": {f"disabled.{name}": value}}
        )
        await self._upsert(
            lambda: self.bucket("tenants", tenant).update_one({"_id": tenant}, change, upsert=True)
        )

    async def set_recording(self, tenant: str, slot: str, redact: list[str] | None) -> None:
        """Record a slot's trigger inputs (``redact``: dotted paths), or stop (None).
        ``slot`` is ``flow_type.trigger``: stored nested, flow type then trigger."""
        path = f"recordings.{slot}"
        change: Doc = {"$unset": {path: ""}} if redact is None else {"$set": {path: redact}}
        await self._upsert(
            lambda: self.bucket("tenants", tenant).update_one({"_id": tenant}, change, upsert=True)
        )

    async def add_rollout_counts(self, deltas: list[Doc]) -> None:
        """Record what rollouts did on one worker since its last report (insert-only: every
        worker adds its own documents, the totals are their sums)."""
        if deltas:
            await self._guard(lambda: self.rollout_counts.insert_many(deltas, ordered=False))

    async def rollout_totals(self, tenant: str, rollout_ids: list[str]) -> dict[str, Doc]:
        """Per rollout id: ``{role: {"runs", "failures", "differed": {kind: n}}}`` summed over
        every worker's reports."""

        async def op() -> list[Doc]:
            return await self.rollout_counts.find(
                {"tenant": tenant, "rollout": {"$in": rollout_ids}}, {"_id": 0}
            ).to_list()

        out: dict[str, Doc] = {}
        for d in await self._guard(op):
            role = out.setdefault(d["rollout"], {}).setdefault(
                d["role"], {"runs": 0, "failures": 0, "differed": {}}
            )
            role["runs"] += int(d.get("runs", 0))
            role["failures"] += int(d.get("failures", 0))
            for kind, n in (d.get("differed") or {}).items():
                role["differed"][kind] = role["differed"].get(kind, 0) + int(n)
        return out

    # -- an Auth0 Action's api.cache: entries on the action's document --------------------
    async def action_cache(self, tenant: str, name: str) -> dict[str, dict[str, Any]]:
        """``key -> {"value", "expires_at"}`` of one action's cache (expired ones too)."""
        key = action_id(tenant, name)
        doc = await self._guard(
            lambda: self.bucket("actions", tenant).find_one({"_id": key}, {"cache": 1})
        )
        entries = (doc or {}).get("cache") or {}
        return {
            str(e["k"]): {"value": e.get("v"), "expires_at": e.get("e")}
            for e in entries.values()
            if isinstance(e, dict) and "k" in e
        }

    async def write_action_cache(
        self, tenant: str, name: str, writes: list[dict[str, Any]], now_ms: int
    ) -> None:
        """Apply ``writes`` (``{"op": "set"|"delete", "key", "value", "expires_at"}``) in
        order, within Auth0's bounds (``domain.auth0.bounded_cache_writes``: the worker does
        not trust the script's own checks), and drop entries expired by ``now_ms``. Each key
        is one field of the document (its name the key's hex, so any key is a valid field),
        so concurrent writers of different keys do not overwrite each other."""
        stale = await self.action_cache(tenant, name)
        live = [k for k, e in stale.items() if int(e.get("expires_at") or 0) > now_ms]
        writes, dropped = bounded_cache_writes(writes, live, now_ms)
        if dropped:
            log.warning(
                "%d api.cache writes of %s/%s past Auth0's bounds not stored", dropped, tenant, name
            )
        fields: dict[str, Any] = {}
        for w in writes:
            field = "cache." + str(w["key"]).encode().hex()
            fields[field] = (
                {"k": w["key"], "v": w.get("value"), "e": w.get("expires_at")}
                if w["op"] == "set"
                else None
            )
        for k, entry in stale.items():
            field = "cache." + k.encode().hex()
            if field not in fields and int(entry.get("expires_at") or 0) <= now_ms:
                fields[field] = None
        update: dict[str, Any] = {}
        kept = {f: v for f, v in fields.items() if v is not None}
        gone = {f: "" for f, v in fields.items() if v is None}
        if kept:
            update["$set"] = kept
        if gone:
            update["$unset"] = gone
        if update:
            key = action_id(tenant, name)
            coll = self.bucket("actions", tenant)
            await self._guard(lambda: coll.update_one({"_id": key}, update))

    async def set_latest_version(self, tenant: str, name: str, version: str) -> None:
        """Record the newest published version on the action."""
        key = action_id(tenant, name)
        await self._guard(
            lambda: self.bucket("actions", tenant).update_one(
                {"_id": key}, {"$set": {"latest_version": version}}
            )
        )

    async def insert_version(self, version: ActionVersion) -> None:
        """Publish an immutable version; ``Conflict`` when that version exists already."""
        doc = version.model_dump(mode="json")
        doc["_id"] = version_id(version.tenant, version.action, version.version)
        doc["created_at"] = version.created_at
        self._seal(doc)
        # Listed on the action first (see ``insert_action``).
        key = action_id(version.tenant, version.action)
        await self._guard(
            lambda: self.bucket("actions", version.tenant).update_one(
                {"_id": key}, {"$addToSet": {"versions": version.version}}
            )
        )
        await self._note_kid(doc.get("sealed_kid"))
        try:
            await self._guard(lambda: self.bucket("versions", version.tenant).insert_one(doc))
        except DuplicateKeyError as exc:
            raise Conflict(f"version {version.version} of {version.action} exists already") from exc

    async def delete_version(self, tenant: str, action: str, version: str) -> None:
        """Remove a version whose publish was not audited."""
        key = version_id(tenant, action, version)
        await self._guard(lambda: self.bucket("versions", tenant).delete_one({"_id": key}))
        await self._guard(
            lambda: self.bucket("actions", tenant).update_one(
                {"_id": action_id(tenant, action)}, {"$pull": {"versions": version}}
            )
        )

    async def list_versions(self, tenant: str, action: str) -> list[ActionVersion]:
        """Every version of one action, in publish order."""
        key = action_id(tenant, action)
        doc = await self._guard(
            lambda: self.bucket("actions", tenant).find_one({"_id": key}, {"versions": 1})
        )
        names = list(dict.fromkeys((doc or {}).get("versions") or []))
        found = await asyncio.gather(*(self.get_version(tenant, action, v) for v in names))
        return sorted((v for v in found if v is not None), key=lambda v: v.created_at)

    # -- tenants' secrets, sealed at rest ------------------------------------------------------
    def _secret_paths(self, doc: Doc) -> list[tuple[str, str]]:
        """Where ``doc`` (an action version as stored) keeps secrets: (part, field) pairs."""
        paths = [("config", f) for f in self._secret_fields.get(doc.get("template") or "", ())]
        paths.append(("target", "signing_key"))
        paths.extend(("secrets", name) for name in doc.get("secrets") or {})
        return [
            (part, f)
            for part, f in paths
            if isinstance(doc.get(part), dict) and doc[part].get(f) not in (None, "")
        ]

    @staticmethod
    def _where(doc: Doc, part: str, field: str) -> str:
        return f"{doc.get('tenant')}/{doc.get('action')}/{doc.get('version')}/{part}.{field}"

    def _seal(self, doc: Doc) -> None:
        """Seal the secrets of ``doc`` in place (nothing without a key)."""
        if self._sealer is None:
            return
        sealed = []
        for part, field in self._secret_paths(doc):
            value = doc[part][field]
            if not is_sealed(value):
                doc[part][field] = self._sealer.seal(str(value), self._where(doc, part, field))
            sealed.append(f"{part}.{field}")
        if sealed:
            doc["sealed"], doc["sealed_kid"] = sealed, self._sealer.kid

    def _version(self, doc: Doc) -> ActionVersion:
        """An action version from its document, its secrets opened."""
        doc.pop("_id", None)
        sealed = doc.pop("sealed", None) or []
        doc.pop("sealed_kid", None)
        for path in sealed:
            part, field = path.split(".", 1)
            value = doc[part][field]
            if self._sealer is None:
                raise SealingError(
                    f"{self._where(doc, part, field)} is sealed and no key is given"
                    " (GATEHOOK_SECRETS__KEY)"
                )
            doc[part][field] = self._sealer.open(value, self._where(doc, part, field))
        return ActionVersion.model_validate(doc)

    async def check_sealed(self) -> list[str]:
        """Refuse (``ConfigError``) when sealed secrets exist that the keys given cannot
        open; the ids of the keys the stored secrets are sealed with."""
        doc = await self._guard(lambda: self.meta.find_one({"_id": "sealing"}))
        kids = sorted(str(k) for k in (doc or {}).get("kids") or [] if k)
        if kids and self._sealer is None:
            raise ConfigError(
                f"tenants' secrets are sealed (key id {', '.join(kids)}) and no key is given:"
                " set GATEHOOK_SECRETS__KEY or GATEHOOK_SECRETS__KEY_FILE"
            )
        missing = [k for k in kids if self._sealer is not None and k not in self._sealer.kids]
        if missing:
            raise ConfigError(
                f"tenants' secrets are sealed with key id {', '.join(missing)}, which is not"
                " given: add it to GATEHOOK_SECRETS__OLD_KEYS (then `gatehook secrets rotate`)"
            )
        return kids

    async def reseal(self) -> dict[str, Any]:
        """Seal every stored secret again under the current key (rotation; also seals secrets
        stored in clear before a key was given). Idempotent; returns what it did."""
        sealer = self._sealer
        if sealer is None:
            raise ConfigError("no key to seal with: set GATEHOOK_SECRETS__KEY")
        resealed = from_clear = 0
        for doc in [d for coll in self._buckets["versions"] async for d in coll.find({})]:
            paths = self._secret_paths(doc)
            if not paths or (
                doc.get("sealed_kid") == sealer.kid and len(doc.get("sealed") or []) == len(paths)
            ):
                continue
            update: Doc = {}
            for part, field in paths:
                value, where = doc[part][field], self._where(doc, part, field)
                if is_sealed(value):
                    resealed += 1
                    value = sealer.open(value, where)
                else:
                    from_clear += 1
                update[f"{part}.{field}"] = sealer.seal(str(value), where)
            update["sealed"] = [f"{part}.{field}" for part, field in paths]
            update["sealed_kid"] = sealer.kid
            coll = self.bucket("versions", str(doc["tenant"]))
            await self._guard(partial(coll.update_one, {"_id": doc["_id"]}, {"$set": update}))
        async for doc in self.ingress.find({}):
            if doc.get("sealed_kid") == sealer.kid:
                continue
            tenant = str(doc["_id"])
            for entry in (doc.get("providers") or {}).values():
                for value in entry.get("secrets") or []:
                    if is_sealed(value):
                        resealed += 1
                    else:
                        from_clear += 1
            await self.set_ingress(tenant, await self.get_ingress(tenant))
        await self._upsert(
            lambda: self.meta.update_one(
                {"_id": "sealing"}, {"$set": {"kids": [sealer.kid]}}, upsert=True
            )
        )
        self._kids_noted = {sealer.kid}
        return {"kid": sealer.kid, "resealed": resealed, "sealed_from_clear": from_clear}

    # -- ingress: the providers that may call a tenant through the gateway ---------------------
    async def get_ingress(self, tenant: str) -> dict[str, dict[str, Any]]:
        """Provider -> ``{"secrets": [...], ...}`` of ``tenant``, the secrets opened."""
        doc = await self._guard(lambda: self.ingress.find_one({"_id": tenant}))
        providers: dict[str, dict[str, Any]] = dict((doc or {}).get("providers") or {})
        for name, entry in providers.items():
            secrets = []
            for i, value in enumerate(entry.get("secrets") or []):
                if is_sealed(value):
                    if self._sealer is None:
                        raise SealingError(
                            f"{tenant}/ingress/{name}/{i} is sealed and no key is given"
                            " (GATEHOOK_SECRETS__KEY)"
                        )
                    value = self._sealer.open(value, f"{tenant}/ingress/{name}/{i}")
                secrets.append(value)
            providers[name] = {**entry, "secrets": secrets}
        return providers

    async def set_ingress(self, tenant: str, providers: dict[str, dict[str, Any]]) -> None:
        """Store ``tenant``'s providers (replacing them), the secrets sealed."""
        sealed: dict[str, dict[str, Any]] = {}
        for name, entry in providers.items():
            secrets = [
                self._sealer.seal(str(v), f"{tenant}/ingress/{name}/{i}")
                if self._sealer is not None
                else v
                for i, v in enumerate(entry.get("secrets") or [])
            ]
            sealed[name] = {**entry, "secrets": secrets}
        doc = {"_id": tenant, "tenant": tenant, "providers": sealed}
        if self._sealer is not None:
            doc["sealed_kid"] = self._sealer.kid
            await self._note_kid(self._sealer.kid)
        await self._upsert(lambda: self.ingress.replace_one({"_id": tenant}, doc, upsert=True))

    async def _note_kid(self, kid: object) -> None:
        """Remember that a secret is sealed with key ``kid`` (``check_sealed`` reads it)."""
        if not kid or kid in self._kids_noted:
            return
        await self._upsert(
            lambda: self.meta.update_one(
                {"_id": "sealing"}, {"$addToSet": {"kids": kid}}, upsert=True
            )
        )
        self._kids_noted.add(str(kid))

    def bucket(self, kind: str, tenant: str) -> AsyncCollection[Doc]:
        """The collection of ``kind`` that holds ``tenant``'s documents (``storage.keys``)."""
        return self._buckets[kind][bucket_of(tenant)]

    def buckets(self, kind: str) -> list[AsyncCollection[Doc]]:
        """Every collection of ``kind``."""
        return list(self._buckets[kind])


async def _none() -> None:
    return None


def _flow(doc: Doc) -> FlowRevision:
    doc.pop("_id", None)
    return FlowRevision.model_validate(doc)


def _heads(doc: Doc) -> TenantHeads:
    """A tenant's document as ``TenantHeads`` (flow types it has no flow of: None)."""
    flows = doc.get("flows") or {}
    current = {}
    for ft, copy in (doc.get("current") or {}).items():
        if isinstance(copy, dict) and flows.get(ft) == copy.get("revision"):
            current[FlowType(ft)] = FlowRevision.model_validate(copy)
    recordings = {
        f"{ft}.{trigger}": list(paths or [])
        for ft, triggers in (doc.get("recordings") or {}).items()
        for trigger, paths in (triggers or {}).items()
    }
    return TenantHeads(
        revisions={ft: (int(flows[ft.value]) if ft.value in flows else None) for ft in FlowType},
        disabled={n: Disabled.model_validate(d) for n, d in (doc.get("disabled") or {}).items()},
        recordings=recordings,
        current=current,
    )
