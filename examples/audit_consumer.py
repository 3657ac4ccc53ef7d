"""An external audit consumer: a durable pull consumer with explicit acks, at least once.

    python examples/audit_consumer.py nats://127.0.0.1:4222 acme [--durable siem-export]

It reads a tenant's audit events, hands each to ``deliver`` (write to your SIEM, a database,
...) and acks it only afterwards, so a crash re-delivers what was not acked. Redelivery means
"at least once": ``deliver`` must be idempotent, which the event ids make easy (the same event
always has the same ``event_id``; a store with a unique key on it drops the repeat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


async def consume(
    url: str,
    tenant: str,
    deliver: Deliver,
    *,
    durable: str = "audit-export",
    batch: int = 100,
    idle_rounds: int | None = None,
    ack_wait_s: float = 30,
) -> int:
    """Pull and deliver events until ``idle_rounds`` empty fetches (None: forever)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        f"gatehook.v1.audit.{tenant}.>",
        durable=durable,
        stream="GATEHOOK_AUDIT",
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1000, ack_wait=ack_wait_s
        ),
    )
    delivered, idle = 0, 0
    try:
        while idle_rounds is None or idle < idle_rounds:
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                idle += 1
                continue
            idle = 0
            for msg in msgs:
                await deliver(json.loads(msg.data))
                await msg.ack()  # only after it is safely delivered
                delivered += 1
    finally:
        await nc.close()
    return delivered


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("tenant")
    parser.add_argument("--durable", default="audit-export")
    args = parser.parse_args()
    seen: set[str] = set()

    async def deliver(event: dict[str, Any]) -> None:
        if event["event_id"] in seen:  # a redelivery: already handled
            return
        seen.add(event["event_id"])
        print(json.dumps(event), flush=True)

    await consume(args.url, args.tenant, deliver, durable=args.durable)


if __name__ == "__main__":
    asyncio.run(main())
