"""The cluster phase: one worker on a single nats-server next to two workers on two nodes of
a 3-node cluster (every stream at 3 replicas), with one write lane and with three (one led by
each node: GATEHOOK_AUDIT__LANES), same run, same custom-JS flow.

    .venv/bin/python benchmarks/cluster.py         # ~2 minutes on 2 cores

Closed loop (64 in flight) for throughput, then steady 500 req/s for p50/p99. All of it shares
this machine's 2 cores: the point is what replication costs, not how a cluster scales.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gatehook.devservers import Server, start_mongo, start_nats, start_nats_cluster
from run import PA, TENANTS, Result, loadgen, measure, set_up_tenants, stop, wait_ready

PY = sys.executable


def worker(
    nats_url: str, mongo_url: str, name: str, replicas: int, lanes: int, **extra: str
) -> subprocess.Popen[bytes]:
    """``gatehook worker`` on ``nats_url`` with the given replicas and lanes (``extra``: more
    GATEHOOK_* settings), only this process's other environment kept."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(
        GATEHOOK_NATS_URL=nats_url,
        GATEHOOK_MONGODB_URL=mongo_url,
        GATEHOOK_MONGODB_DATABASE="bench",
        GATEHOOK_WORKER_NAME=name,
        GATEHOOK_AUDIT__REPLICAS=str(replicas),
        GATEHOOK_AUDIT__LANES=str(lanes),
        **extra,
    )
    return subprocess.Popen([PY, "-m", "gatehook", "worker", "--log-level", "WARNING"], env=env)


def phase(label: str, urls: list[str], mongo: Server, replicas: int, args: argparse.Namespace,
          servers: list[Server], lanes: int = 1) -> Result:  # fmt: skip
    procs = [worker(u, mongo.url, f"{label}-{i}", replicas, lanes) for i, u in enumerate(urls)]
    try:
        uvloop.run(wait_ready(urls[0], len(procs)))
        uvloop.run(set_up_tenants(urls[0], "http://127.0.0.1:9/"))
        subject = f"gatehook.v1.trigger.{TENANTS['custom JS'][0]}.{PA}"
        loadgen(urls[0], subject, "closed", 1.0, procs=1, in_flight=16)
        res = Result(label, len(procs))
        assert servers[0].proc is not None
        measure(res, urls[0], subject, [p.pid for p in procs], servers[0].proc.pid, args)
        return res
    finally:
        for p in procs:
            stop(p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--closed-seconds", type=float, default=5.0)
    p.add_argument("--open-seconds", type=float, default=6.0)
    args = p.parse_args()
    args.in_flight, args.procs, args.rates = 64, 1, [500]
    started = time.monotonic()
    mongo = start_mongo()
    rows = []
    try:
        single = start_nats()
        try:
            rows.append(phase("single node, 1 worker", [single.url], mongo, 1, args, [single]))
        finally:
            single.stop()
        for lanes in (1, 3):
            nodes = start_nats_cluster(3)
            try:
                label = f"3-node cluster R3, {lanes} write lane{'s' if lanes > 1 else ''}"
                urls = [nodes[0].url, nodes[1].url]
                rows.append(phase(label, urls, mongo, 3, args, nodes, lanes))
            finally:
                for n in nodes:
                    n.stop()
    finally:
        mongo.stop()
    print("| setup | workers | closed-loop req/s | p50 ms at 500 req/s | p99 ms at 500 req/s "
          "| errors |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        s = r.steady[500]
        print(
            f"| {r.scenario} | {r.processes} | {r.throughput:.0f} | {s['p50']:.2f} "
            f"| {s['p99']:.2f} | {r.errors} |"
        )
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
