"""Rollouts on the worker: counting canary and stable runs, shadow runs after the reply,
and rolling a failing canary back.

Counts are kept per worker and reported every ``report_s`` as insert-only delta documents
(``MongoStore.add_rollout_counts``: correct without atomic updates, which FerretDB lacks);
after each report the worker reads the totals over every worker for the rollouts it saw and
rolls back a canary past its ``error_rate`` after ``min_runs``. Every worker may find that
at once; the flow change is serialised, so it happens once (``RolloutAdmin.end``).

Shadow runs have their own bound (``shadow_in_flight``): when it is reached, or live calls
are waiting for the sandbox, a shadow run is dropped and counted, never queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gatehook.domain.model import Rollout
from gatehook.domain.rollout import should_roll_back

__all__ = ["RolloutCounter", "RolloutKey", "RolloutStore", "ShadowGate"]

log = logging.getLogger("gatehook.rollouts")


@dataclass(frozen=True, slots=True)
class RolloutKey:
    """One rollout in one slot of one tenant."""

    tenant: str
    flow_type: str
    trigger: str
    action: str
    rollout: str


@dataclass
class _Counts:
    runs: int = 0
    failures: int = 0
    differed: dict[str, int] = field(default_factory=dict)


class RolloutStore(Protocol):
    """Where counts go and totals come from (MongoStore)."""

    async def add_rollout_counts(self, deltas: list[dict[str, Any]]) -> None: ...

    async def rollout_totals(
        self, tenant: str, rollout_ids: list[str]
    ) -> dict[str, dict[str, Any]]: ...


# the app ends the rollout ``key`` (runs and failures of its canary over every worker)
RollBack = Callable[[RolloutKey, int, int], Awaitable[None]]


class RolloutCounter:
    """Counts of this worker since its last report, and the report-and-check loop."""

    def __init__(self, store: RolloutStore, worker: str, report_s: float = 0.25) -> None:
        self._store = store
        self._worker = worker
        self._report_s = report_s
        self._pending: dict[tuple[RolloutKey, str], _Counts] = {}
        self._watched: dict[RolloutKey, Rollout] = {}
        self._task: asyncio.Task[None] | None = None
        self.rolled_back: set[str] = set()  # rollout ids this worker asked to roll back

    def count(self, key: RolloutKey, role: str, *, failed: bool = False) -> None:
        """One run of ``role`` (stable, canary) in the rollout ``key``."""
        c = self._pending.setdefault((key, role), _Counts())
        c.runs += 1
        c.failures += failed

    def shadowed(self, key: RolloutKey, kinds: list[str]) -> None:
        """One shadow run; ``kinds``: what differed from the live run (empty: nothing)."""
        c = self._pending.setdefault((key, "shadow"), _Counts())
        c.runs += 1
        for kind in [*kinds, *(["any"] if kinds else [])]:
            c.differed[kind] = c.differed.get(kind, 0) + 1

    def watch(self, key: RolloutKey, rollout: Rollout) -> None:
        """Check ``key``'s canary totals after every report against ``rollout``'s limit."""
        if key not in self._watched:
            self._watched[key] = rollout

    def start(self, roll_back: RollBack) -> None:
        """Report and check every ``report_s`` until ``aclose``."""
        self._task = asyncio.create_task(self._loop(roll_back))

    async def aclose(self) -> None:
        """Stop the loop and send what is left."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        try:
            await self.report()
        except Exception as exc:  # shutting down: nothing to retry with
            log.warning("last rollout report lost: %s", exc)

    async def report(self) -> None:
        """Send the counts since the last report (kept for the next one if that fails)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        now = datetime.now(UTC)
        docs = [
            {
                "tenant": key.tenant,
                "flow_type": key.flow_type,
                "trigger": key.trigger,
                "action": key.action,
                "rollout": key.rollout,
                "role": role,
                "runs": c.runs,
                "failures": c.failures,
                "differed": c.differed,
                "worker": self._worker,
                "at": now,
            }
            for (key, role), c in pending.items()
        ]
        try:
            await self._store.add_rollout_counts(docs)
        except Exception:
            for k, c in pending.items():  # put them back: counted on the next report
                mine = self._pending.setdefault(k, _Counts())
                mine.runs += c.runs
                mine.failures += c.failures
                for kind, n in c.differed.items():
                    mine.differed[kind] = mine.differed.get(kind, 0) + n
            raise

    async def check(self, roll_back: RollBack) -> None:
        """Read the totals of the watched canaries; roll back those past their limit."""
        by_tenant: dict[str, list[RolloutKey]] = {}
        for key in list(self._watched):
            if key.rollout not in self.rolled_back:
                by_tenant.setdefault(key.tenant, []).append(key)
        for tenant, keys in by_tenant.items():
            totals = await self._store.rollout_totals(tenant, [k.rollout for k in keys])
            for key in keys:
                canary = (totals.get(key.rollout) or {}).get("canary") or {}
                runs, failures = int(canary.get("runs", 0)), int(canary.get("failures", 0))
                if should_roll_back(self._watched[key], runs, failures):
                    self.rolled_back.add(key.rollout)
                    self._watched.pop(key, None)
                    await roll_back(key, runs, failures)

    async def _loop(self, roll_back: RollBack) -> None:
        while True:
            await asyncio.sleep(self._report_s)
            try:
                await self.report()
                await self.check(roll_back)
            except Exception as exc:  # storage down: the next turn tries again
                log.warning("rollout report or check failed: %s", exc)


class ShadowGate:
    """The shadow runs' own bound: run now, or drop (counted) when busy."""

    def __init__(self, limit: int, busy: Callable[[], bool]) -> None:
        self._limit = limit
        self._busy = busy
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0

    def submit(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``work`` in the background; False (dropped) when at the bound or busy."""
        if len(self._tasks) >= self._limit or self._busy():
            self.dropped += 1
            return False
        task = asyncio.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def aclose(self) -> None:
        """Wait briefly for shadow runs in flight, then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        for task in list(self._tasks):
            task.cancel()
