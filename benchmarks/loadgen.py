"""A load generator process: trigger requests over nats-py, closed or open loop.

Closed loop: ``--in-flight`` requests outstanding for ``--seconds``; reports throughput.
Open loop: requests sent on a fixed schedule at ``--rate`` for ``--seconds``; latency is
measured from each request's scheduled time (no coordinated omission). Every request has a
fresh request_id. Prints one JSON line with the results: ``lat`` (ms, per answered request),
``stall_ms`` (the longest time between two successive replies) and
``stall_at`` (seconds into the run where it began).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import nats
import uvloop

BODY = (
    '{"request_id":"%s","user":{"id":"u1","username":"ann","email":"ann@acme.com",'
    '"groups":["staff"],"metadata":{"tier":"gold"}},"request":{"ip":"203.0.113.7",'
    '"risk_score":0.1},"context":{"providerInfo":{"name":"okta"}}}'
)

SIGNIN_BODY = BODY.replace('"request_id":"%s",', '"request_id":"%s","signin_id":"%s",')


def longest_stall(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """(the longest gap in seconds between two successive replies, when it began), counted
    from the first send. ``spans`` are (sent, answered) times. At a steady rate the gaps are
    about 1 / rate; a pause of the responder shows as one long gap."""
    if not spans:
        return 0.0, 0.0
    done = sorted(a for _, a in spans)
    best, at = 0.0, 0.0
    prev = min(s for s, _ in spans)
    for t in done:
        gap = t - prev
        if gap > best:
            best, at = gap, prev
        prev = t
    return best, at


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--mode", choices=["closed", "open"], required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--in-flight", type=int, default=32)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument(
        "--signins",
        action="store_true",
        help="each request a new sign-in (a fresh signin_id: its first trigger pins the flow)",
    )
    args = p.parse_args()
    nc = await nats.connect(args.url, pending_size=64 * 1024 * 1024)
    prefix = uuid.uuid4().hex[:12]
    counter = 0
    lat: list[float] = []
    spans: list[tuple[float, float]] = []
    errors = 0
    first_error = ""  # what the first failed request got, to say what the errors are

    async def one(scheduled: float) -> None:
        nonlocal counter, errors, first_error
        counter += 1
        rid = f"{prefix}-{counter}"
        body = (SIGNIN_BODY % (rid, rid) if args.signins else BODY % rid).encode()
        try:
            msg = await nc.request(args.subject, body, timeout=args.timeout)
            if b'"error":null' not in msg.data:
                errors += 1
                first_error = first_error or msg.data.decode()[:300]
        except Exception as exc:
            errors += 1
            first_error = first_error or repr(exc)
            return
        now = time.perf_counter()
        lat.append((now - scheduled) * 1000)
        spans.append((scheduled, now))

    await one(time.perf_counter())  # warm the response subscription
    lat.clear()
    spans.clear()
    started = time.perf_counter()
    end = started + args.seconds
    if args.mode == "closed":

        async def client() -> None:
            while time.perf_counter() < end:
                await one(time.perf_counter())

        await asyncio.gather(*(client() for _ in range(args.in_flight)))
    else:
        interval = 1.0 / args.rate
        tasks = set()
        n = 0
        while True:
            scheduled = started + n * interval
            if scheduled >= end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=args.timeout + 1)
    elapsed = time.perf_counter() - started
    await nc.close()
    stall, at = longest_stall(spans)
    print(
        json.dumps(
            {
                "ok": len(lat),
                "errors": errors,
                "first_error": first_error,
                "elapsed": elapsed,
                "lat": lat,
                "stall_ms": stall * 1000,
                "stall_at": at - started,
                "started_at": started,  # perf_counter: CLOCK_MONOTONIC, as other processes'
            }
        )
    )


if __name__ == "__main__":
    uvloop.run(main())
