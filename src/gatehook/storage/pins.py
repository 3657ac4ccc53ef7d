"""Sign-in pins written in groups (the ``signin_pins`` collection).

Every sign-in's first trigger pins the flow revisions it runs on. Written one by one that is
three sequential round trips per new sign-in (read, insert, read back), and under load the
writes queue on the server (FerretDB serialises them: 40 new sign-ins at once took a second).
``SigninPins`` gathers the pins asked for while one group is being written and writes the next
group with one ``insert_many`` (unordered) per tenant bucket, all at once: a new sign-in
costs a share of one round trip. A
sign-in that another worker pinned first comes back as a duplicate key, and all of those of a
group are read with one ``find``; an expired pin is replaced (and read back) on its own, as
before. Every caller gets the pin that is stored: concurrent first triggers agree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from gatehook.domain.catalogue import FlowType
from gatehook.errors import StorageError, StorageUnavailable
from gatehook.storage.keys import pin_id

__all__ = ["SigninPins"]

Doc = dict[str, Any]
Pin = dict[FlowType, int | None]
Guard = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
_DUPLICATE_KEY = 11000


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parse(doc: Doc) -> tuple[Pin, datetime]:
    return {FlowType(k): v for k, v in doc["revisions"].items()}, _aware(doc["expires_at"])


@dataclass(slots=True)
class _Want:
    """One pin asked for, and everyone waiting for it (same tenant and sign-in)."""

    tenant: str
    signin_id: str
    current: Pin
    ttl: timedelta
    waiters: list[asyncio.Future[tuple[Pin, datetime]]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The pin's ``_id``."""
        return pin_id(self.tenant, self.signin_id)

    def fresh(self, now: datetime) -> Doc:
        return {
            "_id": self.key,
            "tenant": self.tenant,
            "signin_id": self.signin_id,
            "revisions": {ft.value: rev for ft, rev in self.current.items()},
            "created_at": now,
            "expires_at": now + self.ttl,
        }

    @property
    def wanted(self) -> bool:
        """Someone still waits for this pin (a request that gave up, or was decided with its
        pin deferred, no longer does: ``service.deferred_pins`` writes that one)."""
        return any(not w.done() for w in self.waiters)

    def settle(self, result: tuple[Pin, datetime] | BaseException) -> None:
        for waiter in self.waiters:
            if waiter.done():
                continue  # its request gave up (cancelled)
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)


class SigninPins:
    """``await pin(...)``: the sign-in's pin, written in groups (see the module)."""

    def __init__(self, pins: Callable[[str], AsyncCollection[Doc]], guard: Guard) -> None:
        self._pins = pins  # a tenant's bucket of pins (``storage.keys``)
        self._guard = guard
        self._queue: dict[str, _Want] = {}  # by key: one write per sign-in and group
        self._writer: asyncio.Task[None] | None = None
        self._group: list[_Want] = []  # the group being written
        self.groups = 0  # groups written (for tests and benchmarks)

    async def pin(
        self, tenant: str, signin_id: str, current: Pin, ttl: timedelta
    ) -> tuple[Pin, datetime]:
        """The revisions the sign-in runs on: pinned to ``current`` at its first trigger,
        unless it is pinned already (by this worker or another). Returns the pin and when it
        expires."""
        key = pin_id(tenant, signin_id)
        want = self._queue.get(key)
        if want is None:
            want = self._queue[key] = _Want(tenant, signin_id, current, ttl)
        waiter: asyncio.Future[tuple[Pin, datetime]] = asyncio.get_running_loop().create_future()
        want.waiters.append(waiter)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
            self._writer.add_done_callback(self._stopped)
        return await waiter

    async def _write_groups(self) -> None:
        """Write the queued pins, group after group, until none are left."""
        await asyncio.sleep(0)  # the pins asked for in this turn of the loop join the group
        while self._queue:
            self._group = [want for want in self._queue.values() if want.wanted]
            self._queue = {}
            if not self._group:
                continue
            self.groups += 1
            try:
                await self._guard(partial(self._write, self._group))
            except Exception as exc:
                for want in self._group:
                    want.settle(exc)
        self._group = []

    def _stopped(self, writer: asyncio.Task[None]) -> None:
        """The writer's done callback: cancelled (the worker stopping, even before it ran),
        its callers get an error instead of waiting for ever (settled ones are skipped)."""
        if not writer.cancelled():
            return
        leftover = self._group
        if self._writer is writer:  # (else the queue is a newer writer's)
            leftover = [*leftover, *self._queue.values()]
            self._queue = {}
        self._group = []
        stopped = StorageUnavailable("sign-in pins: the writer stopped")
        for want in leftover:
            want.settle(stopped)

    async def _write(self, group: list[_Want]) -> None:
        now = datetime.now(UTC)
        by_bucket: dict[str, list[_Want]] = {}
        for want in group:
            by_bucket.setdefault(self._pins(want.tenant).name, []).append(want)
        # one insert per tenant bucket, all at once
        taken = await asyncio.gather(*(self._insert(wants, now) for wants in by_bucket.values()))
        failed = [want for wants in taken for want in wants]
        if failed:
            await self._read(failed, now)

    async def _insert(self, wants: list[_Want], now: datetime) -> list[_Want]:
        """Insert ``wants`` (one bucket's); those pinned already are returned."""
        docs = [want.fresh(now) for want in wants]
        failed: set[int] = set()
        try:
            await self._pins(wants[0].tenant).insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            failed = {int(e["index"]) for e in errors}
        for index, (want, doc) in enumerate(zip(wants, docs, strict=True)):
            if index not in failed:
                want.settle(_parse(doc))
        return [wants[i] for i in sorted(failed)]

    async def _read(self, taken: list[_Want], now: datetime) -> None:
        # Read back only what someone still waits for: each read is a scan of the collection
        # on FerretDB, and a pin deferred by a request that gave up waiting comes back here
        # as a duplicate (its deferred write got there first).
        taken = [want for want in taken if want.wanted]
        # One lookup of ``_id`` each: ``$in`` would read every pin on FerretDB.
        stored = await asyncio.gather(
            *(self._pins(w.tenant).find_one({"_id": w.key}) for w in taken)
        )
        for want, doc in zip(taken, stored, strict=True):
            if doc is not None and _aware(doc["expires_at"]) > now:
                want.settle(_parse(doc))  # (the key holds the tenant: it is this tenant's)
            else:
                want.settle(await self._one(want, doc))  # expired, or gone since: slow path

    async def _one(self, want: _Want, doc: Doc | None) -> tuple[Pin, datetime]:
        """One pin the careful way: replace an expired one (unless someone else just did),
        insert a missing one (unless someone else just did), then read what is stored."""
        fresh = want.fresh(datetime.now(UTC))
        if doc is not None:
            await self._pins(want.tenant).replace_one(
                {"_id": want.key, "expires_at": doc["expires_at"]}, fresh
            )
        else:
            with contextlib.suppress(DuplicateKeyError):
                await self._pins(want.tenant).insert_one(fresh)
        stored = await self._pins(want.tenant).find_one({"_id": want.key})
        if stored is None or stored.get("tenant") != want.tenant:
            raise StorageError("sign-in pin vanished while it was being created")
        return _parse(stored)
