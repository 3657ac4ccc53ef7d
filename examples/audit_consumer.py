"""An external audit consumer: a durable pull consumer with explicit acks, at least once.

    python examples/audit_consumer.py nats://acme-audit:audit-secret@127.0.0.1:4222 acme

Run as the tenant's audit role of deploy/nats-roles.conf (acme-audit), it may use one
durable consumer, ``<tenant>-audit-export``, filtered on its own tenant's events; its replies
come to the role's own inbox prefix, ``_INBOX.<user>``.

It reads a tenant's audit events, hands each to ``deliver`` (write to your SIEM, a database,
...) and acks the message only afterwards, so a crash re-delivers what was not acked.
Redelivery means "at least once": ``deliver`` must be idempotent, which the event ids make
easy (the same event always has the same ``event_id``; a store with a unique key on it drops
the repeat).

A decision is one message, its record (``type: flow.decided``): ``events`` turns it into the
``flow.action_executed`` event of each action run, as gatehook's own readers show them, so
``deliver`` sees one event per action run whichever way it was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.js.api import AckPolicy, ConsumerConfig

Deliver = Callable[[dict[str, Any]], Awaitable[None]]

# what an action run's event takes from its decision record (the rest is the run's own)
_FROM_RECORD = ("tenant", "at", "actor", "flow_type", "trigger", "flow_revision")


def events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The audit events one stream message holds: a decision record's action runs, each as
    a ``flow.action_executed`` event; any other message is one event already."""
    if message.get("type") != "flow.decided":
        return [message]
    details = {"pin_deferred": True} if message.get("pin_deferred") else {}
    return [
        {
            "event_id": run["event_id"],
            "type": "flow.action_executed",
            **{key: message[key] for key in _FROM_RECORD},
            "principal": None,
            "flow_revision_before": None,
            "action": run["action"],
            "version": run["version"],
            "previous_version": None,
            "request_id": message["request_id"],
            "signin_id": message["signin_id"],
            "outcome": run["outcome"],
            "duration_ms": run["duration_ms"],
            "error": run["error"],
            "details": dict(details),
        }
        for run in message["executions"]
    ]


async def consume(
    url: str,
    tenant: str,
    deliver: Deliver,
    *,
    durable: str | None = None,
    batch: int = 100,
    idle_rounds: int | None = None,
    ack_wait_s: float = 30,
) -> int:
    """Pull and deliver events until ``idle_rounds`` empty fetches (None: forever); the
    number of events delivered."""
    user = urlsplit(url).username
    nc = await nats.connect(url, inbox_prefix=f"_INBOX.{user}" if user else "_INBOX")
    js = nc.jetstream()
    durable = durable or f"{tenant}-audit-export"
    sub = await js.pull_subscribe(
        f"gatehook.v1.audit.{tenant}.>",
        durable=durable,
        stream="GATEHOOK_AUDIT",
        config=ConsumerConfig(
            # named: created on the subject that carries its filter, the one a tenant's
            # audit role may use
            name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=1000,
            ack_wait=ack_wait_s,
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
                for event in events(json.loads(msg.data)):
                    await deliver(event)
                    delivered += 1
                await msg.ack()  # only after all it holds is safely delivered
    finally:
        await nc.close()
    return delivered


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("tenant")
    parser.add_argument("--durable", help="the consumer's name (default: <tenant>-audit-export)")
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
