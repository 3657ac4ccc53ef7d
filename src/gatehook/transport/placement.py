"""Where the lanes' stream leaders sit: lane ``i``'s two streams led by the ``i``-th of their
peers (sorted by server name), so that with one lane per node a node's death leaves every
other lane's leaders alive and the journal fails over to them (``transport.journal``).

A cluster elects leaders wherever it likes, and after a node's death and return the
surviving nodes lead its lanes; every ``GATEHOOK_AUDIT__REBALANCE_S`` (with jitter, so that
workers do not all act at once) a worker looks at each lane stream and, when its leader is
not the one it should be and that peer is current, asks the leader to step down in its
favour (``$JS.API.STREAM.LEADER.STEPDOWN``, ``placement.preferred``: nats-server 2.11+).
A step-down is a graceful hand-over; writes in flight at that moment fail over like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

__all__ = ["LeaderPlacement"]

log = logging.getLogger("gatehook.audit")

_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError, OSError)


class LeaderPlacement:
    """Moves the lanes' stream leaders to their nodes; ``lanes[i]`` names lane ``i``'s
    streams."""

    def __init__(
        self, nc: Client, js: JetStreamContext, lanes: list[list[str]], every_s: float
    ) -> None:
        self._nc = nc
        self._js = js
        self._lanes = lanes
        self._every = every_s
        self._task: asyncio.Task[None] | None = None
        self.moves = 0

    def start(self) -> None:
        """Check the placement every ``every_s`` (about) from now on."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every * random.uniform(0.5, 1.5))
            try:
                await self.once()
            except Exception as exc:  # a placement check never stops the worker
                log.warning("lane leader placement check failed: %r", exc)

    async def once(self) -> int:
        """One check of every lane stream; the number of step-downs asked for."""
        moved = 0
        for index, streams in enumerate(self._lanes):
            for stream in streams:
                target = await self._misplaced(stream, index)
                if target is None:
                    continue
                try:
                    msg = await self._nc.request(
                        f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                        json.dumps({"placement": {"preferred": target}}).encode(),
                        timeout=5,
                    )
                except _ERRORS as exc:
                    log.info("step-down of %s towards %s not done: %r", stream, target, exc)
                    continue
                answer = json.loads(msg.data)
                if answer.get("success"):
                    moved += 1
                    self.moves += 1
                    log.info("lane %d: %s now led by %s", index, stream, target)
                else:
                    log.info("step-down of %s refused: %s", stream, answer.get("error"))
        return moved

    async def _misplaced(self, stream: str, index: int) -> str | None:
        """The server that should lead ``stream`` when it does not and can, else None."""
        try:
            info = await self._js.stream_info(stream)
        except _ERRORS:
            return None
        cluster = info.cluster
        if cluster is None or not cluster.leader:
            return None
        replicas = cluster.replicas or []
        peers = sorted([cluster.leader, *(r.name for r in replicas if r.name)])
        target = peers[index % len(peers)]
        if target == cluster.leader:
            return None
        if not any(r.name == target and r.current and not r.offline for r in replicas):
            return None  # behind or away: not a leader to hand over to
        return target
