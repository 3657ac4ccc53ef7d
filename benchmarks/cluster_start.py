"""Workers started together on a fresh 3-node cluster (every stream at 3 replicas): the time
from their start until every one answers a ping (it has created or found its streams and
takes requests), with one write lane and with three, a fresh cluster each time.

    .venv/bin/python benchmarks/cluster_start.py          # ~3 minutes
    .venv/bin/python benchmarks/cluster_start.py --workers 2 --runs 3

A deployment's first start is the slow one: a new replicated stream answers once its own
Raft group has elected a leader.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import worker
from gatehook.devservers import start_mongo, start_nats_cluster
from run import stop


async def all_answer(url: str, workers: int, started: float, limit_s: float = 300) -> float:
    """Seconds from ``started`` until ``workers`` processes answer ``$SRV.PING.gatehook``."""
    nc = await nats.connect(url)
    try:
        while time.monotonic() - started < limit_s:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.PING.gatehook", b"", reply=inbox)
            seen = 0
            try:
                while seen < workers:
                    await sub.next_msg(timeout=0.3)
                    seen += 1
            except nats.errors.TimeoutError:
                pass
            await sub.unsubscribe()
            if seen >= workers:
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise TimeoutError(f"not every worker answered within {limit_s} s")
    finally:
        await nc.close()


def once(lanes: int, workers: int) -> float:
    mongo = start_mongo()
    nodes = start_nats_cluster(3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = ",".join(n.url for n in nodes)
        started = time.monotonic()
        procs = [worker(urls, mongo.url, f"start-{i}", 3, lanes) for i in range(workers)]
        return asyncio.run(all_answer(nodes[1].url, workers, started))
    finally:
        for p in procs:
            stop(p)
        for n in nodes:
            n.stop()
        mongo.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lanes", type=int, nargs="+", default=[1, 3])
    args = p.parse_args()
    rows = []
    for run in range(args.runs):  # alternated, so that both see the machine alike
        for lanes in args.lanes:
            rows.append((lanes, once(lanes, args.workers)))
            print(f"run {run + 1}, {lanes} lane(s): {rows[-1][1]:.1f} s", file=sys.stderr)
    print(f"| write lanes | workers | ready after, s (median of {args.runs}) | slowest run, s |")
    print("| ---: | ---: | ---: | ---: |")
    for lanes in args.lanes:
        times = [t for n, t in rows if n == lanes]
        print(f"| {lanes} | {args.workers} | {statistics.median(times):.1f} | {max(times):.1f} |")


if __name__ == "__main__":
    main()
