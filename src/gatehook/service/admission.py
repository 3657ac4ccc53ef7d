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

Pure bookkeeping, no I/O: a dict of counts, updated on entry and exit. Weighted max-min
fairness (each active tenant gets ``capacity * w / sum(w)``) is the rule of Linux's CFS and of
weighted fair queueing, here applied to requests in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    """``enter(tenant)`` (None: admitted; a ``Refusal`` otherwise), then ``leave(tenant)``
    once per admitted request."""

    def __init__(
        self,
        capacity: int,
        *,
        max_share: float = 0.5,
        floor: int = 4,
        reserve: int | None = None,
        weights: Mapping[str, float] | None = None,
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

    def weight(self, tenant: str) -> float:
        """``tenant``'s weight (1 unless configured)."""
        return self._weights.get(tenant, 1.0)

    def limit(self, tenant: str) -> int:
        """How many requests ``tenant`` may hold now."""
        w = self.weight(tenant)
        active = self._weight_sum + (0.0 if tenant in self._flight else w)
        fair = self.capacity * w / active
        alone = self.capacity * min(1.0, self._max_share * w)
        return max(self._floor, int(min(fair, alone)))

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

    def leave(self, tenant: str) -> None:
        """One of ``tenant``'s admitted requests ended."""
        held = self._flight.get(tenant, 0)
        if held <= 0:
            return
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

    def _refuse(self, tenant: str, refusal: Refusal) -> Refusal:
        key = (tenant, "tenant_share" if refusal.tenant else "worker_full")
        if key in self.refused or len(self.refused) < _MAX_TENANTS:
            self.refused[key] = self.refused.get(key, 0) + 1
        else:
            other = ("", key[1])  # bounded: beyond it, counted without the tenant
            self.refused[other] = self.refused.get(other, 0) + 1
        return refusal


_MAX_TENANTS = 10_000


def admission_for(capacity: int, settings: AdmissionSettings) -> Admission:
    """The admission of ``capacity`` slots under ``GATEHOOK_ADMISSION__*``."""
    return Admission(
        capacity, max_share=settings.max_share, floor=settings.floor, weights=settings.weights
    )
