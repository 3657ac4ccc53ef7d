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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import worker
from gatehook.devservers import start_mongo, start_nats_cluster
from run import stop, wait_ready


def once(lanes: int, workers: int) -> float:
    mongo = start_mongo()
    nodes = start_nats_cluster(3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = ",".join(n.url for n in nodes)
        started = time.monotonic()
        procs = [worker(urls, mongo.url, f"start-{i}", 3, lanes) for i in range(workers)]
        asyncio.run(wait_ready(nodes[1].url, workers))  # every one answers a ping and the API
        return time.monotonic() - started
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
