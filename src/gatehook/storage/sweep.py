"""Where MongoDB has no TTL indexes (FerretDB): the expired sign-in pins and rate-limit
windows are deleted by the workers, a tenant bucket at a time."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import Protocol

from gatehook.errors import GatehookError
from gatehook.storage.keys import BUCKETS

__all__ = ["SWEEP_S", "sweep_forever"]

log = logging.getLogger("gatehook")

SWEEP_S = 2.0  # between two buckets' sweeps: all of them every ~8 minutes


class Sweepable(Protocol):
    async def sweep_expired(self, bucket: int, now: datetime) -> int: ...


async def sweep_forever(store: Sweepable, every_s: float = SWEEP_S) -> None:
    """Delete the expired entries of one bucket every ``every_s``, from a random start so
    that workers spread over the buckets; the expired rate-limit windows once a round."""
    bucket = random.randrange(BUCKETS)
    while True:
        await asyncio.sleep(every_s)
        try:
            await store.sweep_expired(bucket, datetime.now(UTC))
        except GatehookError as exc:
            log.debug("sweep of expired pins skipped: %s", exc)
        bucket = (bucket + 1) % BUCKETS
