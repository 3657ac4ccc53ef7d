"""Admission per tenant before the shared limit: no tenant can fill a worker (or the gateway)
with its own work and leave another tenant's sign-ins refused.

A worker serves at most ``capacity`` requests at once for all tenants together. Each tenant
may hold at most its fair share of them: ``capacity`` split between the tenants with work in
flight (the one asking included) by weight, and never more than ``max_share`` of
``capacity`` (times its weight) even when it is alone. A tenant over its share is refused at
once with its own limit in the message, while the others keep being admitted. A tenant under
``floor`` requests in flight is admitted even when the shared limit is reached, into a reserve
of ``reserve`` more slots: a tenant arriving when others have filled the worker is never
turned away before the others' requests end.

A fair share of slots is not a fair share of the worker's time: 128 requests that wait on a
slow backend take little of the event loop, 128 that decide on a template take all of it, and
every other tenant's request then waits behind theirs at each of its steps. So requests' loop
time is metered (``process.metering``; one request in ``sample_every``, counted for as many)
and counted to their tenant, and every ``window_s`` the shares are weighed: while requests
took at least ``busy`` of the window, a tenant that took more than its share of that time (by
weight, among the tenants served in the window or in flight at its end, by a decaying sum of
their recent time, with a quarter's tolerance) has its limit cut to a quarter, down to
``floor`` (from 128 in three windows: the others wait behind its many only that long);
otherwise a cut limit doubles back until it no longer binds. A tenant alone keeps the whole
worker; one whose requests wait elsewhere keeps its slots.

Pure bookkeeping, no I/O: dicts of counts and times, updated on entry and exit. Weighted
max-min fairness (each active tenant gets ``capacity * w / sum(w)``) is the rule of Linux's
CFS and of weighted fair queueing, here applied to requests in flight and to the loop's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gatehook.settings import AdmissionSettings

__all__ = ["Admission", "Refusal", "admission_for"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was not admitted: over the tenant's own share (``tenant``), or every
    slot of the worker taken (``not tenant``); ``limit`` is the limit that refused it."""

    tenant: bool
    limit: int
    in_flight: int

    def message(self, name: str) -> str:
        """The reply's message: retryable, naming the limit that refused it."""
        if self.tenant:
            return (
                f"tenant {name} is over its share of this worker ({self.in_flight} requests in"
                f" flight, its limit now {self.limit}); retry"
            )
        return f"worker overloaded ({self.limit} requests in flight); retry"


class Admission:
    """``enter(tenant)`` (None: admitted; a ``Refusal`` otherwise), then ``leave(tenant,
    seconds)`` once per admitted request, with the loop's time it took."""

    def __init__(
        self,
        capacity: int,
        *,
        max_share: float = 0.5,
        floor: int = 4,
        reserve: int | None = None,
        weights: Mapping[str, float] | None = None,
        busy: float = 0.25,
        window_s: float = 0.1,
        sample_every: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not 0 < max_share <= 1:
            raise ValueError("max_share must be in (0, 1]")
        self.capacity = capacity
        self._max_share = max_share
        self._floor = max(1, floor)
        self._reserve = max(self._floor, capacity // 8) if reserve is None else max(0, reserve)
        self._weights = dict(weights or {})
        self._flight: dict[str, int] = {}
        self._weight_sum = 0.0  # of the tenants in ``_flight``
        self.total = 0
        # refusals by (tenant, "tenant_share" | "worker_full"), for the metrics
        self.refused: dict[tuple[str, str], int] = {}
        # the loop's time: this window's by tenant, and a decayed sum (halved each window)
        self._busy = busy
        self._window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._spent: dict[str, float] = {}
        self._spent_total = 0.0
        self._served: set[str] = set()  # tenants with a request ended in this window
        self._every = max(1, sample_every)
        self._countdown = self._every
        self._usage: dict[str, float] = {}
        self._caps: dict[str, int] = {}  # limits cut for taking more than a share of time

    def weight(self, tenant: str) -> float:
        """``tenant``'s weight (1 unless configured)."""
        return self._weights.get(tenant, 1.0)

    def limit(self, tenant: str) -> int:
        """How many requests ``tenant`` may hold now."""
        w = self.weight(tenant)
        active = self._weight_sum + (0.0 if tenant in self._flight else w)
        fair = self.capacity * w / active
        cap = self._caps.get(tenant, self.capacity)
        return max(self._floor, int(min(fair, self._alone(tenant), cap)))

    def _alone(self, tenant: str) -> float:
        """The most ``tenant`` may hold with no other tenant in flight."""
        return self.capacity * min(1.0, self._max_share * self.weight(tenant))

    def capped(self) -> dict[str, int]:
        """The tenants whose limit is cut for their share of the loop's time, and the cut."""
        return dict(self._caps)

    def in_flight(self, tenant: str) -> int:
        """``tenant``'s requests being served."""
        return self._flight.get(tenant, 0)

    def enter(self, tenant: str) -> Refusal | None:
        """Admit one request of ``tenant`` (None) or say why not."""
        held = self._flight.get(tenant, 0)
        limit = self.limit(tenant)
        if held >= limit:
            return self._refuse(tenant, Refusal(True, limit, held))
        if self.total >= self.capacity and (
            held >= self._floor or self.total >= self.capacity + self._reserve
        ):
            return self._refuse(tenant, Refusal(False, self.capacity, self.total))
        if held == 0:
            self._weight_sum += self.weight(tenant)
        self._flight[tenant] = held + 1
        self.total += 1
        return None

    def meter(self) -> bool:
        """Whether to meter the loop's time of the request just admitted: one in
        ``sample_every`` is (metering costs a few microseconds a request), counted for all."""
        self._countdown -= 1
        if self._countdown:
            return False
        self._countdown = self._every
        return True

    def leave(self, tenant: str, seconds: float | None = None) -> None:
        """One of ``tenant``'s admitted requests ended, after ``seconds`` of the loop's time
        (None: not metered, see ``meter``)."""
        held = self._flight.get(tenant, 0)
        if held <= 0:
            return
        self._served.add(tenant)
        if seconds is not None and seconds > 0:
            seconds *= self._every
            self._spent[tenant] = self._spent.get(tenant, 0.0) + seconds
            self._spent_total += seconds
        now = self._clock()
        if now - self._window_start >= self._window_s:
            self._weigh(now)
        self.total -= 1
        if held == 1:
            del self._flight[tenant]
            self._weight_sum -= self.weight(tenant)
            if not self._flight:
                self._weight_sum = 0.0  # no float drift left behind
        else:
            self._flight[tenant] = held - 1

    def in_flight_by_tenant(self) -> dict[str, int]:
        """A copy of the counts of the tenants with work in flight."""
        return dict(self._flight)

    def refused_by(self, per_tenant: bool) -> dict[tuple[str, str], int]:
        """The refusals so far, by (tenant, reason), or by ("", reason) summed."""
        if per_tenant:
            return dict(self.refused)
        summed: dict[tuple[str, str], int] = {}
        for (_, reason), n in self.refused.items():
            summed[("", reason)] = summed.get(("", reason), 0) + n
        return summed

    def _weigh(self, now: float) -> None:
        """Weigh each tenant's use of the loop's time at the end of a window (see above)."""
        busy = self._busy < 1 and self._spent_total >= self._busy * (now - self._window_start)
        self._window_start = now
        usage = self._usage
        for tenant in usage:
            usage[tenant] *= 0.5
        for tenant, spent in self._spent.items():
            usage[tenant] = usage.get(tenant, 0.0) + spent
        # the tenants served now, metered or not (a tenant that stopped is no one's
        # competitor any more); their shares of the time they took lately
        served = self._served | self._flight.keys()
        self._served = set()
        self._spent.clear()
        self._spent_total = 0.0
        total = sum(usage.get(t, 0.0) for t in served)
        weights = sum(self.weight(t) for t in served)
        for tenant in usage.keys() | self._caps.keys():
            used = usage.get(tenant, 0.0)
            cap = self._caps.get(tenant)
            over = tenant in served and used > _TOLERANCE * total * self.weight(tenant) / weights
            if busy and over:
                held = min(self._flight.get(tenant, 0), cap or self.capacity)
                self._caps[tenant] = max(self._floor, held // _CUT)
            elif cap is not None:
                if cap * 2 >= self._alone(tenant):  # binds no more
                    del self._caps[tenant]
                else:
                    self._caps[tenant] = cap * 2
            if used < _FORGOTTEN_S and tenant in usage:
                del usage[tenant]

    def _refuse(self, tenant: str, refusal: Refusal) -> Refusal:
        key = (tenant, "tenant_share" if refusal.tenant else "worker_full")
        if key in self.refused or len(self.refused) < _MAX_TENANTS:
            self.refused[key] = self.refused.get(key, 0) + 1
        else:
            other = ("", key[1])  # bounded: beyond it, counted without the tenant
            self.refused[other] = self.refused.get(other, 0) + 1
        return refusal


_MAX_TENANTS = 10_000
_CUT = 4  # a limit cut is divided by this
_TOLERANCE = 1.25  # over its share of the loop's time by more than a quarter: cut
_FORGOTTEN_S = 1e-6  # a tenant's decayed use of the loop below this no longer counts


def admission_for(capacity: int, settings: AdmissionSettings) -> Admission:
    """The admission of ``capacity`` slots under ``GATEHOOK_ADMISSION__*``."""
    return Admission(
        capacity,
        max_share=settings.max_share,
        floor=settings.floor,
        weights=settings.weights,
        busy=settings.busy,
        window_s=settings.window_ms / 1000,
    )
