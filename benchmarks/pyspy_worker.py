"""Sample a real ``gatehook worker`` process with py-spy under a closed loop, and print where
its time goes (self time by function, and inclusive time by gatehook/nats function).

.venv/bin/python benchmarks/pyspy_worker.py [--scenario "custom JS"] [--seconds 6]

cProfile inflates small calls; py-spy samples the unmodified process (no GIL held, ~1 %).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gatehook.devservers import start_mongo, start_nats  # noqa: E402
from run import PA, PY, TENANTS, loadgen, set_up_tenants, start_worker, stop, wait_ready  # noqa: E402


def busiest_child(pid: int) -> int:
    """The child of ``pid`` (the worker) busiest over the next second: a sandbox child
    serving the load (not the compiler child, busy only while compiling)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()

    def cpu(child: str) -> int:
        fields = Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = {c: cpu(c) for c in children}
    time.sleep(1.0)
    return int(max(children, key=lambda c: cpu(c) - before[c]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="custom JS", choices=list(TENANTS))
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--rate", type=float, default=0.0, help="open loop at this rate (0: closed)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--isolation", default="process", choices=["process", "worker"])
    p.add_argument(
        "--child",
        action="store_true",
        help="sample the busiest sandbox child instead of the worker (with native frames)",
    )
    args = p.parse_args()
    nats_server, mongo = start_nats(), start_mongo()
    worker = start_worker(
        1, nats_server.url, mongo.url, {"GATEHOOK_SANDBOX__ISOLATION": args.isolation}
    )
    try:
        uvloop.run(wait_ready(nats_server.url, 1))
        uvloop.run(set_up_tenants(nats_server.url, "http://127.0.0.1:9/"))
        subject = f"gatehook.v1.trigger.{TENANTS[args.scenario][0]}.{PA}"
        loadgen(nats_server.url, subject, "closed", 1.0, procs=1, in_flight=16)  # warm up
        out = Path(tempfile.mkdtemp()) / "stacks.txt"
        mode = ("open", args.rate) if args.rate else ("closed", 0.0)
        load = subprocess.Popen(
            [
                *(PY, str(HERE / "loadgen.py"), "--url", nats_server.url, "--subject", subject),
                *("--mode", mode[0], "--seconds", str(args.seconds + 2)),
                *("--in-flight", str(args.in_flight), "--rate", str(mode[1])),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        spy = Path(PY).with_name("py-spy")
        target = busiest_child(worker.pid) if args.child else worker.pid
        subprocess.run(
            [
                str(spy),
                "record",
                "-p",
                str(target),
                *(["--native"] if args.child else []),
                "-d",
                str(int(args.seconds)),
                "-r",
                "400",
                "-f",
                "raw",
                "-o",
                str(out),
                # native frames need the target stopped while sampled
                *([] if args.child else ["--nonblocking"]),
            ],
            check=True,
            capture_output=True,
        )
        print(load.communicate()[0].strip().splitlines()[-1][:200])
    finally:
        stop(worker)
        mongo.stop()
        nats_server.stop()
    own: collections.Counter[str] = collections.Counter()
    roots: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        roots[frames[0]] += n
        for f in set(frames):
            inclusive[f] += n
    print(f"\n{total} samples; by thread:")
    for frame, n in roots.most_common(5):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("\nself time:")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("\nself time by module (where the worker's CPU goes):")
    modules: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        where = frame.rpartition("(")[2].split(":")[0]
        modules[where or "(native)"] += n
    for where, n in modules.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {where}")
    print("\ninclusive time (gatehook, nats, asyncio/uvloop):")
    keep = [(f, n) for f, n in inclusive.items() if any(k in f for k in ("gatehook", "nats/"))]
    for frame, n in sorted(keep, key=lambda x: -x[1])[: args.top]:
        print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
