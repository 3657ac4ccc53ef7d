"""Where the lanes' stream leaders sit: lane ``i``'s stream led by the ``i``-th of its peers
(sorted by server name), so that with one lane per node a node's death leaves every other
lane's leader alive and the journal fails over to them (``audit.journal``).

A cluster elects leaders wherever it likes, and after a node's death and return the
surviving nodes lead its lanes. A worker places the lanes before it serves (``settle``,
within a bound it logs), then looks at each lane stream every ``GATEHOOK_AUDIT__REBALANCE_S``
(with jitter, so that workers do not all act at once), and every ``_DEGRADED_S`` while a lane
is led by another node than its own (``misplaced``): a node that comes back gets its lane
within seconds. When a leader is not the one it should be and that peer is current, the
worker asks the leader to step down in its favour (``$JS.API.STREAM.LEADER.STEPDOWN``,
``placement.preferred``: nats-server 2.11+). A step-down is a graceful hand-over; writes in
flight at that moment fail over like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

__all__ = ["LeaderPlacement"]

log = logging.getLogger("gatehook.audit")

_DEGRADED_S = 2.0  # how often a worker looks again while a lane is misplaced

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
        self.misplaced = 0  # lanes led by another node than their own at the last check

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

    async def settle(self, within_s: float) -> bool:
        """Place the lanes before serving: check and move until every lane is led by its own
        node, or ``within_s`` has passed (logged; the worker serves anyway, and the checks
        go on). Whether they are placed."""
        started = time.monotonic()
        while True:
            try:
                await self.once()
            except Exception as exc:  # never keeps a worker from starting
                log.warning("lane leader placement check failed: %r", exc)
            if self.misplaced == 0:
                log.info(
                    "lanes placed, one led by each node, in %.1f s", time.monotonic() - started
                )
                return True
            if time.monotonic() - started >= within_s:
                log.warning(
                    "%d lane(s) not led by their own node after %.0f s: serving anyway; a"
                    " node's death may pause them (gatehook_audit_lanes_misplaced)",
                    self.misplaced,
                    within_s,
                )
                return False
            await asyncio.sleep(0.25)

    async def _run(self) -> None:
        while True:
            every = _DEGRADED_S if self.misplaced else self._every
            await asyncio.sleep(every * random.uniform(0.5, 1.5))
            try:
                await self.once()
            except Exception as exc:  # a placement check never stops the worker
                log.warning("lane leader placement check failed: %r", exc)

    async def once(self) -> int:
        """One check of every lane stream; the number of step-downs asked for
        (``misplaced`` counts the lanes not led by their own node before the moves)."""
        moved = misplaced = 0
        for index, streams in enumerate(self._lanes):
            for stream in streams:
                placed, target = await self._look(stream, index)
                if not placed:
                    misplaced += 1
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
        self.misplaced = misplaced
        return moved

    async def _look(self, stream: str, index: int) -> tuple[bool, str | None]:
        """Whether ``stream`` is led by the server that should lead it, and that server when
        it is not and can take over now (a current replica), else None."""
        try:
            info = await self._js.stream_info(stream)
        except _ERRORS:
            return False, None
        cluster = info.cluster
        if cluster is None:
            return True, None  # a server of its own: nothing to place
        if not cluster.leader:
            return False, None  # electing
        replicas = cluster.replicas or []
        if not replicas:
            return True, None  # one replica: it leads where it is
        peers = sorted([cluster.leader, *(r.name for r in replicas if r.name)])
        target = peers[index % len(peers)]
        if target == cluster.leader:
            return True, None
        if not any(r.name == target and r.current and not r.offline for r in replicas):
            return False, None  # behind or away: not a leader to hand over to
        return False, target
