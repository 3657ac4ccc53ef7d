"""Audit page benchmark: the newest events of one tenant in a long stream, read backwards
(``latest_events``, what the console does) next to reading the tenant's events forward from
the stream's start (``read_events``, what a naive page would do), in one run.

    .venv/bin/python benchmarks/audit_page.py [--events 200000] [--tenants 50]

The stream holds ``--events`` execution events spread over ``--tenants`` tenants, plus a
publish event every 5,000 events for the tenant measured. Reports a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import nats
import uvloop

from gatehook.audit.reader import latest_events, read_events
from gatehook.audit.stream import AuditPublisher
from gatehook.devservers import start_nats
from gatehook.domain.contract import AuditEvent
from gatehook.settings import AuditSettings


async def fill(publisher: AuditPublisher, events: int, tenants: int) -> None:
    now = datetime.now(UTC)
    batch: list[AuditEvent] = []
    for i in range(events):
        tenant = f"t{i % tenants}"
        kind = "flow.action_published" if i % 5000 == 0 else "flow.action_executed"
        batch.append(AuditEvent(event_id=f"e{i}", type=kind, tenant=tenant, at=now, actor="bench"))
        if len(batch) == 1000:
            await publisher.publish(batch)
            batch = []
    if batch:
        await publisher.publish(batch)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    server = start_nats()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        settings = AuditSettings(duplicate_window_s=1)
        publisher = AuditPublisher(js, settings)
        await publisher.ensure_stream()
        started = time.perf_counter()
        await fill(publisher, args.events, args.tenants)
        filled = time.perf_counter() - started
        rows = []
        for label, kind in (
            ("all types", None),
            ("flow.action_published", "flow.action_published"),
        ):
            backs, fwds = [], []
            for _ in range(3):  # alternating, so neither read warms the other's cache alone
                t = time.perf_counter()
                newest = await latest_events(js, tenant="t0", event_type=kind, limit=200)
                backs.append(time.perf_counter() - t)
                t = time.perf_counter()
                forward = [
                    e async for e in read_events(js, tenant="t0", event_type=kind, idle_s=0.2)
                ]
                fwds.append(time.perf_counter() - t - 0.2)  # minus the idle wait ending the read
                assert [e.event_id for e in forward[-200:]] == [e.event_id for e in newest]
            back, fwd = sorted(backs)[1], sorted(fwds)[1]
            rows.append((label, len(newest), back * 1000, len(forward), fwd * 1000))
        await nc.close()
    finally:
        server.stop()
    lines = [
        f"Stream: {args.events:,} events over {args.tenants} tenants (filled in {filled:.1f} s).",
        "",
        "| tenant t0, newest 200 (median of 3) | returned | latest_events (ms) "
        "| forward from start: events read | forward (ms) | forward / latest_events |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, n, back_ms, fwd_n, fwd_ms in rows:
        ratio = fwd_ms / back_ms
        lines.append(f"| {label} | {n} | {back_ms:.1f} | {fwd_n:,} | {fwd_ms:.1f} | {ratio:.1f}x |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit_page.md").write_text(table + "\n")


if __name__ == "__main__":
    uvloop.run(main())
