"""End-to-end benchmark: gatehook next to the raw NATS ceiling, in one run.

    .venv/bin/python benchmarks/run.py            # ~4 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # shorter runs, for a smoke check

Starts real servers (nats-server with JetStream, a MongoDB-protocol server), N worker
processes (`gatehook worker`), and drives load from separate processes with nats-py
(benchmarks/loadgen.py). For each scenario: closed-loop throughput and open-loop latency
percentiles at fixed rates, plus worker CPU (worker and sandbox children) and RSS.
Writes results/<stamp>.json and .md, and prints the Markdown. Audit is on throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import uvloop

from gatehook.admin.client import AdminClient
from gatehook.devservers import Server, start_mongo, start_nats
from gatehook.errors import GatehookError

HERE = Path(__file__).resolve().parent
PY = sys.executable
PA = "external_authentication.post_authentication"

JS = """export async function execute(input) {
  return {kind: 'continue', claims: {uid: input.user.id, tier: input.user.metadata.tier}};
}"""
TS = """export async function execute(input: {user: {id: string}}): Promise<object> {
  const year: number = 2026;
  return {kind: 'continue', claims: {uid: input.user.id, year}};
}"""
ZITADEL = """function benchZitadel(ctx, api) {
  api.v1.claims.setClaim('idp', ctx.v1.providerInfo.name);
  api.v1.user.appendMetadata('seen', 'yes');
}"""

ACTIONS: dict[str, dict[str, Any]] = {
    "allow": {"name": "allow", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}},
    "risk": {"name": "risk", "template": "block-by-risk-score", "config": {"threshold": 0.9}},
    "js": {"name": "js", "source": JS, "language": "js"},
    "ts": {"name": "ts", "source": TS, "language": "ts"},
    "benchZitadel": {"name": "benchZitadel", "source": ZITADEL, "language": "js"},
}
# scenario -> (tenant, attached actions)
TENANTS: dict[str, tuple[str, list[str]]] = {
    "empty slot": ("bench-empty", []),
    "template (domain-allowlist)": ("bench-template", ["allow"]),
    "custom JS": ("bench-js", ["js"]),
    "custom TS": ("bench-ts", ["ts"]),
    "ZITADEL-style": ("bench-zitadel", ["benchZitadel"]),
    "five actions": ("bench-five", ["allow", "risk", "js", "ts", "benchZitadel"]),
}


@dataclass
class Result:
    scenario: str
    workers: int
    throughput: float = 0.0
    errors: int = 0
    cpu_cores: float = 0.0
    rss_mb: float = 0.0
    latency: dict[int, dict[str, float]] = field(default_factory=dict)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def proc_tree(pids: list[int]) -> list[int]:
    """``pids`` and their descendants (the sandbox children of each worker)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(pids), list(pids)
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in out:
                out.add(child)
                frontier.append(child)
    return sorted(out)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in proc_tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in proc_tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def loadgen(
    url: str,
    subject: str,
    mode: str,
    seconds: float,
    *,
    procs: int,
    in_flight: int = 32,
    rate: float = 0.0,
) -> list[dict[str, Any]]:
    args = [
        PY,
        str(HERE / "loadgen.py"),
        "--url",
        url,
        "--subject",
        subject,
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--in-flight",
        str(in_flight),
        "--rate",
        str(rate / procs),
    ]
    running = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    outs = []
    for r in running:
        stdout, _ = r.communicate(timeout=seconds + 60)
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def measure(res: Result, url: str, subject: str, pids: list[int], args: argparse.Namespace) -> None:
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    outs = loadgen(
        url,
        subject,
        "closed",
        args.closed_seconds,
        procs=args.procs,
        in_flight=args.in_flight // args.procs,
    )
    res.cpu_cores = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
    res.throughput = sum(o["ok"] for o in outs) / max(o["elapsed"] for o in outs)
    res.errors += sum(o["errors"] for o in outs)
    res.rss_mb = rss_mb(pids)
    for rate in args.rates:
        outs = loadgen(url, subject, "open", args.open_seconds, procs=args.procs, rate=rate)
        lat = [x for o in outs for x in o["lat"]]
        res.errors += sum(o["errors"] for o in outs)
        res.latency[rate] = {f"p{p}": pct(lat, p) for p in (50, 90, 99, 99.9)}
        res.latency[rate]["n"] = len(lat)


def start_workers(
    n: int, nats_url: str, mongo_url: str, extra: dict[str, str] | None = None
) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(extra or {})
    env.update(
        GATEHOOK_NATS_URL=nats_url,
        GATEHOOK_MONGODB_URL=mongo_url,
        GATEHOOK_MONGODB_DATABASE="bench",
    )
    return [
        subprocess.Popen(
            [PY, "-m", "gatehook", "worker", "--log-level", "WARNING"],
            env={**env, "GATEHOOK_WORKER_NAME": f"bench-{i}"},
        )
        for i in range(n)
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


async def wait_ready(url: str, workers: int) -> None:
    nc = await nats.connect(url)
    client = AdminClient(nc, timeout=2)
    deadline = time.monotonic() + 90
    try:
        answered = 0
        while answered < workers * 3:  # a few answers: every worker of the group is up
            try:
                await client.call("bench-empty", "templates.list")
                answered += 1
            except GatehookError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def set_up_tenants(url: str) -> None:
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    try:
        for tenant, names in TENANTS.values():
            slots = {"post_authentication": [f"{n}@latest" for n in names]}
            if not names:  # "empty slot": the flow exists, post_authentication has nothing
                names = ["allow"]
                slots["pre_creation"] = ["allow@latest"]
            file = {
                "actions": [ACTIONS[n] for n in names],
                "flows": {"external_authentication": slots},
            }
            await client.call(tenant, "apply", file=file)
    finally:
        await nc.close()


def table(results: list[Result], echo: Result, rates: list[int]) -> str:
    lines = [
        "| scenario | workers | closed-loop req/s | vs echo | worker CPU (cores) | RSS MB "
        "| errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in [echo, *results]:
        lines.append(
            f"| {r.scenario} | {r.workers} | {r.throughput:.0f} | "
            f"{r.throughput / echo.throughput:.0%} | {r.cpu_cores:.2f} | {r.rss_mb:.0f} "
            f"| {r.errors} |"
        )
    lines += [
        "",
        "Open-loop latency, ms (p50 / p90 / p99 / p99.9):",
        "",
        "| scenario | workers | " + " | ".join(f"{r} req/s" for r in rates) + " |",
        "| --- | ---: | " + " | ".join("---" for _ in rates) + " |",
    ]
    for r in [echo, *results]:
        cells = []
        for rate in rates:
            lat = r.latency.get(rate, {})
            cells.append(
                " / ".join(
                    f"{lat.get(k, float('nan')):.2f}" for k in ("p50", "p90", "p99", "p99.9")
                )
            )
        lines.append(f"| {r.scenario} | {r.workers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--closed-seconds", type=float, default=5.0)
    parser.add_argument("--open-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    if args.quick:
        args.closed_seconds, args.open_seconds = 2.0, 1.5
    started = time.monotonic()
    nats_server: Server = start_nats()
    mongo: Server = start_mongo()
    results: list[Result] = []
    try:
        echo_proc = subprocess.Popen(
            [PY, str(HERE / "echo.py"), "--url", nats_server.url], stdout=subprocess.PIPE, text=True
        )
        assert echo_proc.stdout is not None
        echo_proc.stdout.readline()
        echo = Result("raw nats-py echo (ceiling)", 1)
        measure(echo, nats_server.url, f"gatehook.v1.trigger.x.{PA}", [echo_proc.pid], args)
        stop([echo_proc])  # type: ignore[list-item]
        print(f"echo: {echo.throughput:.0f} req/s", flush=True)

        groups: list[tuple[int, list[str], dict[str, str]]] = [
            (1, list(TENANTS), {}),
            (2, ["template (domain-allowlist)", "custom JS"], {}),
            # the same JS scenario with FastStream's subscriber on the trigger subject
            (1, ["custom JS"], {"GATEHOOK_TRIGGER_TRANSPORT": "faststream"}),
        ]
        for n_workers, scenarios, extra in groups:
            workers = start_workers(n_workers, nats_server.url, mongo.url, extra)
            try:
                uvloop.run(wait_ready(nats_server.url, n_workers))
                if n_workers == 1 and not extra:
                    uvloop.run(set_up_tenants(nats_server.url))
                for name in scenarios:
                    tenant = TENANTS[name][0]
                    label = f"{name} (FastStream subscriber)" if extra else name
                    res = Result(label, n_workers)
                    # warm caches and interpreters
                    loadgen(
                        nats_server.url,
                        f"gatehook.v1.trigger.{tenant}.{PA}",
                        "closed",
                        0.5,
                        procs=1,
                        in_flight=8,
                    )
                    measure(
                        res,
                        nats_server.url,
                        f"gatehook.v1.trigger.{tenant}.{PA}",
                        [w.pid for w in workers],
                        args,
                    )
                    results.append(res)
                    print(f"{label} x{n_workers}: {res.throughput:.0f} req/s", flush=True)
            finally:
                stop(workers)
    finally:
        mongo.stop()
        nats_server.stop()
    md = table(results, echo, args.rates)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {
            "in_flight": args.in_flight,
            "procs": args.procs,
            "rates": args.rates,
            "closed_seconds": args.closed_seconds,
            "open_seconds": args.open_seconds,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": [r.__dict__ for r in [echo, *results]],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stamp}.json").write_text(json.dumps(meta, indent=2))
    (args.out / f"{stamp}.md").write_text(md + "\n")
    print()
    print(md)
    print(f"\n({meta['elapsed_s']} s; results in {args.out})")


if __name__ == "__main__":
    main()
