"""Sign-in pins that wait for MongoDB.

A new sign-in's first trigger pins the flow revisions it runs on. When MongoDB cannot take
the pin in time (down, hung, failing over), a login service would rather sign the person in
than fail them: the sign-in is decided on the revisions this worker has cached as current,
its pin is kept here (and in the worker's pin cache, so its next triggers here agree), and
written when MongoDB is back, with the revisions it was decided on. A pin stored meanwhile by
another worker wins (the write only inserts). The queue is bounded; what it cannot hold is
dropped, counted and logged once per outage (that sign-in's later triggers on another worker
pin it then).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Protocol

from gatehook.domain.catalogue import FlowType
from gatehook.errors import GatehookError
from gatehook.logs import Sparse

__all__ = ["DeferredPins", "PinWriter"]

log = logging.getLogger("gatehook.trigger")
_BATCH = 500  # pins written at once
Pin = dict[FlowType, int | None]


class PinWriter(Protocol):
    """Stores pins that are not stored yet (MongoStore)."""

    async def store_pins(self, pins: list[tuple[str, str, Pin, datetime]]) -> None:
        """Insert each (tenant, signin_id, pin, expires) unless that sign-in is pinned."""
        ...


class DeferredPins:
    """The pins decided while MongoDB was away; ``start()``, ``aclose()``."""

    def __init__(self, writer: PinWriter, *, capacity: int, retry_s: float = 0.25) -> None:
        self._writer = writer
        self._capacity = capacity
        self._retry_s = retry_s
        self._pins: OrderedDict[tuple[str, str], tuple[Pin, datetime]] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self._say_deferred = Sparse()
        self.deferred = 0  # pins decided without MongoDB
        self.written = 0  # of those, written later
        self.dropped = 0  # not kept: the queue was full

    def __len__(self) -> int:
        return len(self._pins)

    def add(self, tenant: str, signin_id: str, pin: Pin, expires: datetime) -> None:
        """Keep a pin to write later (the first one of a sign-in stays)."""
        self.deferred += 1
        key = (tenant, signin_id)
        if key in self._pins:
            return
        if len(self._pins) >= self._capacity:
            self.dropped += 1
            if not self._warned:
                self._warned = True
                log.error(
                    "deferred sign-in pins: the queue is full (%d); further pins are dropped"
                    " until MongoDB is back",
                    self._capacity,
                )
            return
        if self._say_deferred.due():
            log.warning(
                "MongoDB did not store sign-in pins in time: %d new sign-ins decided on cached"
                " revisions so far, their pins written when it is back",
                self.deferred,
            )
        self._pins[key] = (pin, expires)
        self._wake.set()

    def start(self) -> None:
        """Start the writer (once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        """Stop the writer; the pins it still holds are written one last time, at most 2 s."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pins:
            try:
                await asyncio.wait_for(self.flush(), 2)
            except (GatehookError, TimeoutError):
                log.error("%d deferred sign-in pins were not written", len(self._pins))

    async def flush(self) -> None:
        """Write every held pin now (raises when MongoDB still refuses)."""
        batch = [(t, s, pin, exp) for (t, s), (pin, exp) in list(self._pins.items())[:_BATCH]]
        if not batch:
            return
        await self._writer.store_pins(batch)
        for tenant, signin, _, _ in batch:
            self._pins.pop((tenant, signin), None)
        self.written += len(batch)
        log.info("%d deferred sign-in pins written", len(batch))
        self._warned = False

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pins:
                try:
                    await self.flush()
                except GatehookError as exc:
                    log.debug("deferred pins not written yet: %s", exc)
                    await asyncio.sleep(self._retry_s)
