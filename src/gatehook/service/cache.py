"""Hot-path caches: immutable things (versions, flow revisions, pins) in LRUs, and what each
tenant's decisions start from (``Heads``), dropped by the change broadcast."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

from gatehook.domain.model import TenantHeads

__all__ = ["Heads", "Lru"]

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A small least-recently-used map."""

    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The value, or None (counted as a miss)."""
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: K) -> V | None:
        """The value, or None; neither counted nor made recent."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert, evicting the least recently used past capacity."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._capacity:
            self._data.popitem(last=False)


class Heads:
    """Each tenant's ``TenantHeads``, least recently used evicted past ``capacity`` tenants.

    Changes are broadcast to every worker, which stops serving the tenant's entry
    (``invalidate``) but keeps it as the tenant's last loaded heads: a request may fall back
    on them when MongoDB does not answer the reload in time (``last``). ``ttl_s`` is only a
    safety net for a broadcast that never arrived, so the background reloads it causes stay a
    trickle however many tenants there are. After a reconnect (when broadcasts may have been
    missed) ``expire_all`` makes every entry stale: each is reloaded once, at its next use,
    while the stale one is served.
    """

    def __init__(self, ttl_s: float, capacity: int = 100_000) -> None:
        self._ttl = ttl_s
        self._capacity = capacity
        # tenant -> (fresh until, heads, current: False once invalidated)
        self._data: OrderedDict[str, tuple[float, TenantHeads, bool]] = OrderedDict()
        self._generation: dict[str, int] = {}

    def lookup(self, tenant: str) -> tuple[TenantHeads | None, bool]:
        """(the cached heads, whether they are within the TTL); (None, False) when absent or
        invalidated. Stale heads stay until replaced: a caller may serve them while it
        reloads."""
        entry = self._data.get(tenant)
        if entry is None or not entry[2]:
            return None, False
        self._data.move_to_end(tenant)
        return entry[1], entry[0] >= time.monotonic()

    def peek(self, tenant: str) -> tuple[TenantHeads | None, bool]:
        """The heads a request of ``tenant`` runs on, current or last loaded (fresh: False),
        without making the entry recent."""
        entry = self._data.get(tenant)
        if entry is None:
            return None, False
        return entry[1], entry[2] and entry[0] >= time.monotonic()

    def last(self, tenant: str) -> TenantHeads | None:
        """The last heads loaded for ``tenant``, even when a change has invalidated them."""
        entry = self._data.get(tenant)
        return entry[1] if entry is not None else None

    def generation(self, tenant: str) -> int:
        """Bumped by every invalidation; a load started before one must not be stored."""
        return self._generation.get(tenant, 0)

    def put(self, tenant: str, heads: TenantHeads, generation: int) -> None:
        """Store heads loaded at ``generation`` (ignored if invalidated since)."""
        if self._generation.get(tenant, 0) == generation:
            self._data[tenant] = (time.monotonic() + self._ttl, heads, True)
            self._data.move_to_end(tenant)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def invalidate(self, tenant: str) -> None:
        """Stop serving ``tenant``'s heads (a change was broadcast); they stay as its last."""
        entry = self._data.get(tenant)
        if entry is not None:
            self._data[tenant] = (0.0, entry[1], False)
        self._generation[tenant] = self._generation.get(tenant, 0) + 1

    def expire_all(self) -> None:
        """Make every entry stale (served while it is reloaded once)."""
        for tenant, (_, heads, current) in self._data.items():
            self._data[tenant] = (0.0, heads, current)
