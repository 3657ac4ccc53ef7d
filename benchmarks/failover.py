"""A node killed under load: a 3-node cluster (every stream at 3 replicas), two workers on two
nodes, a login service on all three nodes sending 200 req/s and retrying each request_id
(2 s timeout, up to 8 attempts); after 3 s the node leading the streams on the decision path
is killed (-9). One row per lane count, same run:

    .venv/bin/python benchmarks/failover.py        # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/failover.py --lanes 0 --runs 10 --seconds 15 --kill-at 5

With one lane, the node leads GATEHOOK_AUDIT (placed there by step-down); with three, the
rebalance gives each node one lane and the node also leads the aggregate GATEHOOK_AUDIT. The
columns: requests unanswered after every retry, the longest gap between two answers, the
slowest answer, and the decision records of the answered requests that GATEHOOK_AUDIT lacks or
holds twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import worker
from gatehook.devservers import Server, start_mongo, start_nats_cluster
from run import PA, TENANTS, set_up_tenants, stop, wait_ready

TENANT = TENANTS["custom JS"][0]
SUBJECT = f"gatehook.v1.trigger.{TENANT}.{PA}"


async def leader(nc: NATS, stream: str) -> str | None:
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
    except (TimeoutError, nats.errors.Error):
        return None
    return info.cluster.leader if info.cluster else None


async def move(nc: NATS, stream: str, to: str) -> None:
    deadline = time.monotonic() + 60
    while await leader(nc, stream) != to:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{stream} not led by {to}")
        body = json.dumps({"placement": {"preferred": to}}).encode()
        with contextlib.suppress(nats.errors.Error):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
        await asyncio.sleep(0.5)


async def placed(nc: NATS, lanes: int) -> None:
    """Wait until the workers' rebalance has each lane's stream led by its node."""
    deadline = time.monotonic() + 60
    streams = [f"GATEHOOK_AUDIT_{i}" for i in range(lanes)]
    while [await leader(nc, s) for s in streams] != [f"n{s[-1]}" for s in streams]:
        if time.monotonic() > deadline:
            raise TimeoutError("lane leaders not placed")
        await asyncio.sleep(0.5)


class LoginService:
    def __init__(self, conns: list[NATS]) -> None:
        self.conns = conns
        self.answered_at: list[float] = []
        self.latency: list[float] = []
        self.unanswered = 0
        self.answered: set[str] = set()

    async def decide(self, nc: NATS, rid: str) -> None:
        body = json.dumps(
            {"request_id": rid, "user": {"id": "u1", "email": "ann@acme.com"}}
        ).encode()
        started = time.monotonic()
        for _ in range(8):
            try:
                msg = await nc.request(SUBJECT, body, timeout=2)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.1)
                continue
            reply: dict[str, Any] = json.loads(msg.data)
            if reply["error"] is None or not reply["error"]["retryable"]:
                self.answered_at.append(time.monotonic())
                self.latency.append(time.monotonic() - started)
                self.answered.add(rid)
                return
            await asyncio.sleep(0.2)
        self.unanswered += 1

    async def run(self, seconds: float, rate: float, kill_at: float, node: Server) -> int:
        tasks = []
        started = time.monotonic()
        killed = False
        n = 0
        while time.monotonic() - started < seconds:
            if not killed and time.monotonic() - started > kill_at:
                killed = True
                node.kill()
            tasks.append(
                asyncio.create_task(self.decide(self.conns[n % 3], f"fo-{uuid.uuid4().hex}"))
            )
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)
        return n


async def audited(nc: NATS, expected: set[str]) -> tuple[int, int]:
    """(lost, stored twice) among ``expected``'s decision records in GATEHOOK_AUDIT, waiting
    up to 60 s for sourcing to catch up after the elections."""
    subject = f"gatehook.v1.audit.{TENANT}.flow.decided"
    deadline = time.monotonic() + 60
    ids: list[str] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, nats.errors.Error):
            js = nc.jetstream(timeout=5)
            ids, seq = [], 0
            while True:
                try:
                    msg = await js.get_msg("GATEHOOK_AUDIT", seq + 1, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
                seq = msg.seq
                ids.append(json.loads(msg.data or b"{}")["request_id"])
            if expected <= set(ids):
                break
        await asyncio.sleep(1)
    mine = [i for i in ids if i in expected]
    return len(expected - set(mine)), len(mine) - len(set(mine))


async def scenario(lanes: int, nodes: list[Server], args: argparse.Namespace) -> dict[str, Any]:
    urls = [n.url for n in nodes]
    conns = [  # each prefers its own node, then the others
        await nats.connect(
            [u, *(v for v in urls if v != u)], dont_randomize=True, max_reconnect_attempts=-1
        )
        for u in urls
    ]
    ops = await nats.connect(urls[1:], max_reconnect_attempts=-1)
    try:
        if lanes > 1:  # (0: the default, placed by the workers themselves before they serve)
            await placed(ops, lanes)
        for stream in ["GATEHOOK_AUDIT", "GATEHOOK_RECORDINGS"]:
            await move(ops, stream, "n0")
        service = LoginService(conns)
        kill_at = args.kill_at if args.kill_at is not None else args.seconds / 3
        sent = await service.run(args.seconds, args.rate, kill_at, nodes[0])
        lost, twice = await audited(ops, service.answered)
        times = sorted(service.answered_at)
        return {
            "lanes": lanes,
            "sent": sent,
            "unanswered": service.unanswered,
            "gap": max(b - a for a, b in itertools.pairwise(times)),
            "slowest": max(service.latency),
            "lost": lost,
            "twice": twice,
        }
    finally:
        for nc in [*conns, ops]:
            await nc.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=9.0)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument(
        "--lanes", type=int, nargs="+", default=[1, 3], help="0: unset (one per replica)"
    )
    p.add_argument("--runs", type=int, default=1, help="runs of each lane count")
    p.add_argument("--kill-at", type=float, default=None, help="s into the load (seconds/3)")
    args = p.parse_args()
    started = time.monotonic()
    mongo = start_mongo()
    rows = []
    try:
        for lanes in [n for n in args.lanes for _ in range(args.runs)]:
            nodes = start_nats_cluster(3)
            # set lanes: rebalanced every second (the test's pace); unset: as deployed
            extra = {"GATEHOOK_AUDIT__REBALANCE_S": "1"} if lanes else {}
            procs = [
                worker(nodes[i].url, mongo.url, f"fo-{lanes}-{i}", 3, lanes, **extra)
                for i in (0, 1)
            ]
            try:
                asyncio.run(wait_ready(nodes[1].url, len(procs)))
                asyncio.run(set_up_tenants(nodes[1].url, "http://127.0.0.1:9/"))
                rows.append(asyncio.run(scenario(lanes, nodes, args)))
            finally:
                for proc in procs:
                    stop(proc)
                for n in nodes:
                    n.stop()
    finally:
        mongo.stop()
    print("| write lanes | requests | unanswered | longest gap s | slowest answer s "
          "| records lost | stored twice |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        lanes = r["lanes"] or "unset (3 replicas)"
        print(
            f"| {lanes} | {r['sent']} | {r['unanswered']} | {r['gap']:.2f} "
            f"| {r['slowest']:.2f} | {r['lost']} | {r['twice']} |"
        )
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
