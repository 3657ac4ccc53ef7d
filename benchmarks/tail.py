"""Where the slow requests of a steady rate wait: the client's latency next to the worker's
own, split by phase, with the event loop's lag, garbage collections and stolen CPU time.

.venv/bin/python benchmarks/tail.py [--scenario "custom JS"] [--rate 1000] [--seconds 8]

Starts real servers and a worker with timing probes (``tail_probe.py``), drives an open loop
(``loadgen.py``) and prints, for the requests of that phase:

- p50 / p99 / p99.9 / max at the client (from each request's scheduled time), in the worker
  (from the message's arrival to the reply's publish), of each sandbox call and of each
  journal write (reply record and audit events until acknowledged);
- the client's longest stall and what each phase's slowest was in the 100 ms before it ended;
- CPU per request and voluntary context switches (a thread's sleep, each a wake-up later)
  per request of the worker, its sandbox children and nats-server (all its threads) over the
  phase;
- the event loop's lag over 5 ms (a 1 ms timer's oversleep: the loop busy or not scheduled),
  the garbage collections during the phase, and CPU time stolen by the hypervisor
  (``/proc/stat``, in 10 ms ticks) while it ran.

A phase's slowest requests that are slow in the worker but whose loop lag is small waited on
another process (the sandbox child, nats-server); slow at the client but not in the worker,
they waited outside it (nats-server, the load generator, the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gatehook.devservers import start_mongo, start_nats  # noqa: E402
from run import (  # noqa: E402
    PA,
    PY,
    TENANTS,
    kind_of,
    loadgen,
    pct,
    proc_tree,
    set_up_tenants,
    stop,
    wait_ready,
)


def steal_ticks(until: float, out: list[tuple[float, int]]) -> None:
    """Append (when, ticks) each time the machine's stolen time grows, until ``until``."""
    before = None
    while time.perf_counter() < until:
        with open("/proc/stat") as f:
            ticks = int(f.readline().split()[8])
        if before is not None and ticks != before:
            out.append((time.perf_counter(), ticks - before))
        before = ticks
        time.sleep(0.005)


def proc_stats(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    """(CPU seconds, voluntary context switches of all its threads) by process: how often
    its threads slept and woke."""
    out: dict[str, tuple[float, int]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            switches = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches"):
                        switches += int(line.split(":")[1])
        except OSError:
            continue
        out[name] = ((int(fields[11]) + int(fields[12])) / tick, switches)
    return out


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | | | | |"
    return (
        f"| {name} | {len(values)} | {pct(values, 50):.2f} | {pct(values, 99):.2f} "
        f"| {pct(values, 99.9):.2f} | {max(values):.2f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--scenario", default="custom JS", choices=list(TENANTS))
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args()
    out = Path(tempfile.mkdtemp()) / "probe.json"
    nats_server, mongo = start_nats(), start_mongo()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(
        GATEHOOK_NATS_URL=nats_server.url,
        GATEHOOK_MONGODB_URL=mongo.url,
        GATEHOOK_MONGODB_DATABASE="bench",
        GATEHOOK_WORKER_NAME="bench",
        TAIL_PROBE_OUT=str(out),
    )
    worker = subprocess.Popen([PY, str(HERE / "tail_probe.py")], env=env)
    stolen: list[tuple[float, int]] = []
    try:
        uvloop.run(wait_ready(nats_server.url, 1))
        uvloop.run(set_up_tenants(nats_server.url, "http://127.0.0.1:9/"))
        subject = f"gatehook.v1.trigger.{TENANTS[args.scenario][0]}.{PA}"
        loadgen(nats_server.url, subject, "closed", 2.0, procs=1, in_flight=16)  # warm up
        sampler = threading.Thread(
            target=steal_ticks, args=(time.perf_counter() + args.seconds + 1, stolen)
        )
        assert nats_server.proc is not None
        tree = proc_tree([worker.pid, nats_server.proc.pid])  # with the sandbox children
        pids = {kind_of(p) + (f" {p}" if kind_of(p) == "sandbox" else ""): p for p in tree}
        before = proc_stats(pids)
        sampler.start()
        (o,) = loadgen(nats_server.url, subject, "open", args.seconds, procs=1, rate=args.rate)
        sampler.join()
        after = proc_stats(pids)
    finally:
        stop(worker)
        mongo.stop()
        nats_server.stop()
    probe = json.loads(out.read_text())
    t0 = o["started_at"]
    end = t0 + o["elapsed"]

    def phase(kind: str) -> list[tuple[float, float]]:
        pairs = zip(probe["starts"][kind], probe["millis"][kind], strict=True)
        return [(t, ms) for t, ms in pairs if t0 <= t <= end]

    print(f"{args.scenario} at {args.rate:.0f} req/s for {args.seconds:.0f} s\n")
    print("| where | n | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(row("client (from the scheduled time)", o["lat"]))
    labels = {
        "worker": "worker (arrival to reply)",
        "sandbox": "sandbox call",
        "journal": "journal (record + events acknowledged)",
    }
    for kind, label in labels.items():
        print(row(label, [ms for _, ms in phase(kind)]))
    print("\n| process | CPU µs per request | sleeps and wake-ups per request |")
    print("| --- | ---: | ---: |")
    n = max(len(o["lat"]), 1)
    for name, (cpu, switches) in after.items():
        if name in before and cpu > before[name][0]:
            cpu_us = (cpu - before[name][0]) / n * 1e6
            print(f"| {name} | {cpu_us:.0f} | {(switches - before[name][1]) / n:.2f} |")
    stall_end = t0 + o["stall_at"] + o["stall_ms"] / 1000
    print(f"\nthe client's longest stall: {o['stall_ms']:.1f} ms at {o['stall_at']:.2f} s")
    for kind in ("worker", "sandbox", "journal", "lag"):
        near = [ms for t, ms in phase(kind) if stall_end - 0.1 <= t + ms / 1000 <= stall_end]
        print(
            f"  {kind} slowest ending in the 100 ms before it ended: {max(near, default=0):.1f} ms"
        )
    lags = [(t - t0, ms) for t, ms in phase("lag") if ms > 5]
    print(
        f"\nevent loop lag over 5 ms: {len(lags)} times, longest "
        f"{max((ms for _, ms in lags), default=0):.1f} ms"
        + (" at " + ", ".join(f"{t:.2f} s ({ms:.0f})" for t, ms in lags[:12]) if lags else "")
    )
    g = probe["gc"]
    runs = [(g[i] - t0, g[i + 1], int(g[i + 2])) for i in range(0, len(g), 3) if t0 <= g[i] <= end]
    print(
        f"garbage collections during the phase: {len(runs)}"
        + (
            ": " + ", ".join(f"gen{gen} {ms:.1f} ms at {t:.2f} s" for t, ms, gen in runs[:12])
            if runs
            else ""
        )
    )
    steal = [(t - t0, n) for t, n in stolen if t0 <= t <= end]
    print(
        f"CPU time stolen by the hypervisor: {sum(n for _, n in steal) * 10} ms"
        + (" (at " + ", ".join(f"{t:.2f} s" for t, _ in steal[:12]) + ")" if steal else "")
    )


if __name__ == "__main__":
    main()
