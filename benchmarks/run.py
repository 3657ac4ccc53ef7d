"""End-to-end benchmark: what a decision costs next to the raw NATS transport, in one run.

    .venv/bin/python benchmarks/run.py            # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # shorter phases, for a smoke check

Starts real servers (nats-server with JetStream, a MongoDB-protocol server), `gatehook
worker` with 1 or N processes, and drives load from separate processes with nats-py
(benchmarks/loadgen.py). Audit is on throughout. For each scenario:

- closed loop (64 requests in flight): throughput, and CPU µs per decision for each kind of
  process: worker(s), sandbox children, nats-server (from /proc, over the phase);
- steady rate (open loop at 500 and 1,000 req/s): p50 / p99 / p99.9 / max latency from each
  request's scheduled time, and the longest stall (the longest time with no reply arriving);

next to a raw nats-py echo responder in the same run, under each sandbox isolation level
(``--isolations``: ``process``, scripts in the sandbox children; ``worker``, scripts in the
worker process). One scenario sends a new sign-in with every request (a fresh ``signin_id``:
its first trigger pins the flow in MongoDB), as a login service does. ``--many-tenants
1000,10000`` adds platforms of that many tenants (``benchmarks/tenants.py``: set-up time, cold
first decisions, CPU per decision against one hot tenant, p99 right after a worker start,
RSS). ``--floor`` adds the design's floor (``benchmarks/floor.py``): gatehook's lean
transport, a sandbox call and the journal, alone and together, with no decision logic.
Writes results/<stamp>.json and .md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
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
from gatehook.devservers import Server, free_port, start_mongo, start_nats
from gatehook.errors import GatehookError

HERE = Path(__file__).resolve().parent
PY = sys.executable
PA = "external_authentication.post_authentication"

# The new-user action: an ES module that checks the e-mail domain.
JS = """export async function execute(input) {
  if (!input.user.email.endsWith('@acme.com')) return {kind: 'block', reason: 'domain'};
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
    "one target (keep-alive endpoint)": ("bench-target", ["target"]),
    "custom JS with a shadow": ("bench-shadow", ["js"]),
    "five actions": ("bench-five", ["allow", "risk", "js", "ts", "benchZitadel"]),
    "custom JS (a new sign-in each)": ("bench-signin", ["js"]),
}
# scenarios whose every request is a new sign-in (a fresh signin_id: the flow is pinned)
NEW_SIGNINS = {"custom JS (a new sign-in each)"}
TARGET_KEY = "bench-signing-key"


def serve_target(port: int) -> None:
    """A target endpoint on loopback (aiohttp, keep-alive): append_claims, as a ZITADEL
    target answers; it does not check the signature (the load generator is the cost)."""
    from aiohttp import web

    reply = b'{"append_claims":[{"key":"group","value":"ADMIN"}]}'

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=reply, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handle)
    uvloop.run(web._run_app(app, host="127.0.0.1", port=port, print=None))


@dataclass
class Result:
    scenario: str
    processes: int
    isolation: str = "-"
    throughput: float = 0.0
    errors: int = 0
    cpu_us: dict[str, float] = field(default_factory=dict)  # per request, by process kind
    rss_mb: float = 0.0
    steady: dict[int, dict[str, float]] = field(default_factory=dict)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def proc_tree(pids: list[int]) -> list[int]:
    """``pids`` and their descendants (worker processes, their sandbox children)."""
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


def kind_of(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    if b"gatehook.sandbox.child" in cmd:
        return "sandbox"
    if b"nats-server" in cmd:
        return "nats-server"
    return "worker"


def cpu_by_kind(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) of ``pids`` and their descendants, by process kind."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in proc_tree(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = kind_of(pid)
        # own time plus that of reaped children (a sandbox child replaced during the phase)
        seconds = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
        out[kind] = out.get(kind, 0.0) + seconds
    return out


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
    signins: bool = False,
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
        *(["--signins"] if signins else []),
    ]
    running = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    outs = []
    for r in running:
        stdout, _ = r.communicate(timeout=seconds + 60)
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def measure(
    res: Result,
    url: str,
    subject: str,
    pids: list[int],
    nats_pid: int,
    args: argparse.Namespace,
    *,
    steady: bool = True,
) -> None:
    signins = res.scenario in NEW_SIGNINS
    before = cpu_by_kind([*pids, nats_pid])
    outs = loadgen(
        url,
        subject,
        "closed",
        args.closed_seconds,
        procs=args.procs,
        in_flight=args.in_flight // args.procs,
        signins=signins,
    )
    after = cpu_by_kind([*pids, nats_pid])
    done = sum(o["ok"] for o in outs)
    res.throughput = done / max(o["elapsed"] for o in outs)
    res.errors += sum(o["errors"] for o in outs)  # the CPU table's column: this phase only
    for o in outs:
        if o.get("first_error"):
            print(f"  {res.scenario}: first error: {o['first_error']}", flush=True)
    res.cpu_us = {k: (after[k] - before.get(k, 0.0)) / max(done, 1) * 1e6 for k in after}
    res.rss_mb = rss_mb(pids)
    for rate in args.rates if steady else []:
        outs = loadgen(
            url, subject, "open", args.open_seconds, procs=args.procs, rate=rate, signins=signins
        )
        lat = [x for o in outs for x in o["lat"]]
        stats = {f"p{p}": pct(lat, p) for p in (50, 99, 99.9)}
        stats["max"] = max(lat, default=float("nan"))
        worst = max(outs, key=lambda o: o["stall_ms"])
        stats["stall_ms"] = worst["stall_ms"]
        stats["stall_at"] = worst["stall_at"]
        stats["n"] = len(lat)
        stats["errors"] = sum(o["errors"] for o in outs)
        for o in outs:
            if o.get("first_error"):
                print(f"  {res.scenario} at {rate}/s: first error: {o['first_error']}", flush=True)
        res.steady[rate] = stats


FLOOR_MODES = ("lean", "sandbox", "journal", "journal+sandbox")


def floor(mode: str, url: str, nats_pid: int, args: argparse.Namespace) -> Result:
    """One row of the floor (closed loop only): ``benchmarks/floor.py --mode mode``."""
    proc = subprocess.Popen(
        [PY, str(HERE / "floor.py"), "--url", url, "--mode", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        res = Result(f"floor: {mode}", 1)
        subject = f"gatehook.v1.trigger.x.{PA}"
        loadgen(url, subject, "closed", 1.0, procs=1, in_flight=16)  # warm the child
        measure(res, url, subject, [proc.pid], nats_pid, args, steady=False)
    finally:
        stop(proc)  # type: ignore[arg-type]
    print(f"floor {mode}: {res.throughput:.0f} req/s", flush=True)
    return res


def start_worker(
    processes: int,
    nats_url: str,
    mongo_url: str,
    extra: dict[str, str] | None = None,
    event_loop: str = "uvloop",
) -> subprocess.Popen[bytes]:
    """``gatehook worker`` (options left out at their defaults, so that another gatehook put
    on PYTHONPATH through ``extra`` runs too, to compare two versions in one run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(extra or {})
    env.update(
        GATEHOOK_NATS_URL=nats_url,
        GATEHOOK_MONGODB_URL=mongo_url,
        GATEHOOK_MONGODB_DATABASE="bench",
        GATEHOOK_WORKER_NAME="bench",
    )
    return subprocess.Popen(
        [
            *(PY, "-m", "gatehook", "worker", "--log-level", "WARNING"),
            *(("--processes", str(processes)) if processes != 1 else ()),
            *(("--event-loop", event_loop) if event_loop != "uvloop" else ()),
        ],
        env=env,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def wait_ready(url: str, processes: int) -> None:
    nc = await nats.connect(url)
    client = AdminClient(nc, timeout=2)
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                health = await nc.request("$SRV.PING.gatehook", b"", timeout=1)
                del health
                await client.call("bench-empty", "templates.list")
            except (GatehookError, nats.errors.Error):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            # every process of the group answers a ping
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish("$SRV.PING.gatehook", b"", reply=inbox)
            seen = 0
            try:
                while seen < processes:
                    await sub.next_msg(timeout=0.5)
                    seen += 1
            except nats.errors.TimeoutError:
                pass
            await sub.unsubscribe()
            if seen >= processes:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {processes} worker processes answered")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def set_up_tenants(url: str, target_url: str = "") -> None:
    ACTIONS["target"] = {
        "name": "target",
        "target": {"endpoint": target_url, "signing_key": TARGET_KEY},
    }
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    try:
        for tenant, names in TENANTS.values():
            slots = {"post_authentication": [f"{n}@latest" for n in names]}
            if not names:  # "empty slot": the flow exists, post_authentication has nothing
                names = ["allow"]
                slots["pre_creation"] = ["allow@latest"]
            if tenant == "bench-shadow":  # the live version, and a shadow run after each reply
                slots["post_authentication"] = [{"use": "js@latest", "shadow": "js@latest"}]
            file = {
                "actions": [ACTIONS[n] for n in names],
                "flows": {"external_authentication": slots},
            }
            await client.call(tenant, "apply", file=file)
    finally:
        await nc.close()


def _f(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def _total(r: Result) -> float:
    """CPU per request of every process on the way: the responder, its sandbox children and
    nats-server (the design's cost must not move into nats-server unseen)."""
    return sum(r.cpu_us.get(k, 0.0) for k in ("worker", "sandbox", "nats-server"))


def tables(results: list[Result], echo: Result, rates: list[int]) -> str:
    echo_us = echo.cpu_us.get("worker", float("nan"))
    lines = [
        "CPU per request (µs, closed loop, 64 in flight; from /proc over the phase):",
        "",
        "| scenario | isolation | processes | req/s | responder µs | sandbox µs "
        "| responder + sandbox µs | vs echo responder | nats-server µs | total µs "
        "| vs echo total | RSS MB | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    echo_total = _total(echo)
    for r in [echo, *results]:
        own = r.cpu_us.get("worker", 0.0) + r.cpu_us.get("sandbox", 0.0)
        lines.append(
            f"| {r.scenario} | {r.isolation} | {r.processes} | {r.throughput:.0f} "
            f"| {r.cpu_us.get('worker', 0.0):.0f} | {r.cpu_us.get('sandbox', 0.0):.0f} "
            f"| {own:.0f} | {own / echo_us:.1f}x | {r.cpu_us.get('nats-server', 0.0):.0f} "
            f"| {_total(r):.0f} | {_total(r) / echo_total:.1f}x | {r.rss_mb:.0f} | {r.errors} |"
        )
    lines += [
        "",
        "Steady rate (open loop), ms from each request's scheduled time:",
        "",
        "| scenario | isolation | processes | rate | p50 | p99 | p99.9 | max | longest stall "
        "| errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in [echo, *results]:
        for rate in rates:
            s = r.steady.get(rate)
            if not s:
                continue
            lines.append(
                f"| {r.scenario} | {r.isolation} | {r.processes} | {rate} | {_f(s['p50'])} "
                f"| {_f(s['p99'])} "
                f"| {_f(s['p99.9'])} | {_f(s['max'])} | {_f(s['stall_ms'], 1)} "
                f"(at {s['stall_at']:.1f} s) | {s['errors']:.0f} |"
            )
    lines += ["", "Ratios (same run):"]
    for isolation in dict.fromkeys(r.isolation for r in results):
        lines += ["", f"Isolation {isolation}:", ""]
        lines += ratio_lines([r for r in results if r.isolation == isolation], echo, rates)
    return "\n".join(lines)


def ratio_lines(results: list[Result], echo: Result, rates: list[int]) -> list[str]:
    """The ratios of one isolation level's results."""
    echo_us = echo.cpu_us.get("worker", float("nan"))
    by_name = {(r.scenario, r.processes): r for r in results}
    one, five = by_name.get(("custom JS", 1)), by_name.get(("five actions", 1))
    two = by_name.get(("custom JS", 2))
    lines: list[str] = []
    if one is not None:
        own = one.cpu_us.get("worker", 0.0) + one.cpu_us.get("sandbox", 0.0)
        lines.append(
            f"- one custom-JS action: CPU per decision {own / echo_us:.1f}x the echo's; "
            f"with nats-server {_total(one) / _total(echo):.1f}x"
        )
        for rate in rates:
            if rate in one.steady and rate in echo.steady:
                e, g = echo.steady[rate], one.steady[rate]
                lines.append(
                    f"- at {rate} req/s: p99 echo + {g['p99'] - e['p99']:.2f} ms, "
                    f"p99.9 echo + {g['p99.9'] - e['p99.9']:.2f} ms, "
                    f"longest stall {g['stall_ms']:.1f} ms"
                )
    if one is not None and five is not None:
        own1 = one.cpu_us.get("worker", 0.0) + one.cpu_us.get("sandbox", 0.0)
        own5 = five.cpu_us.get("worker", 0.0) + five.cpu_us.get("sandbox", 0.0)
        lines.append(f"- five actions / one action, CPU per decision: {own5 / own1:.2f}x")
        for rate in rates:
            if rate in one.steady and rate in five.steady:
                lines.append(
                    f"- five actions / one action at {rate} req/s: "
                    f"p50 {five.steady[rate]['p50'] / one.steady[rate]['p50']:.2f}x, "
                    f"p99 {five.steady[rate]['p99'] / one.steady[rate]['p99']:.2f}x"
                )
    for name, label in (
        ("custom JS with a shadow", "custom JS with a shadow on the slot / without"),
        ("one target (keep-alive endpoint)", "one target / one custom-JS action"),
    ):
        other = by_name.get((name, 1))
        if one is None or other is None:
            continue
        for rate in rates:
            if rate in one.steady and rate in other.steady:
                a, b = other.steady[rate], one.steady[rate]
                lines.append(
                    f"- {label} at {rate} req/s: p50 {a['p50']:.2f} vs {b['p50']:.2f} ms, "
                    f"p99 {a['p99']:.2f} vs {b['p99']:.2f} ms"
                )
    if one is not None and two is not None:
        lines.append(
            f"- 2 processes / 1 process, custom JS throughput: "
            f"{two.throughput / one.throughput:.2f}x"
        )
    return lines


_TENANT_ARGS = argparse.Namespace(
    provision="auto", seconds=5.0, rate=300.0, same_script=False, env=[]
)


def many_tenants(sizes: list[int]) -> list[dict[str, Any]]:
    """``benchmarks/tenants.py`` for each size, on servers of its own (the API provisions up
    to 1,000 tenants, storage above)."""
    import tenants

    rows = []
    for n in sizes:
        size_args = argparse.Namespace(**vars(_TENANT_ARGS))
        size_args.provision = "api" if n <= 1000 else "store"
        rows.append(uvloop.run(tenants.one_size(n, size_args)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--rates", default="500,1000")
    parser.add_argument("--closed-seconds", type=float, default=5.0)
    parser.add_argument("--open-seconds", type=float, default=8.0)
    parser.add_argument("--scenarios", default=",".join(TENANTS), help="comma-separated")
    parser.add_argument("--env", action="append", default=[], help="K=V for the worker")
    parser.add_argument("--event-loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--max-processes", type=int, default=2, help="1: no 2-process phase")
    parser.add_argument(
        "--isolations", default="process,worker", help="sandbox isolation levels, in turn"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also the design's floor: gatehook's transport parts alone (benchmarks/floor.py)",
    )
    parser.add_argument(
        "--many-tenants",
        default="",
        help="also a platform of N tenants each (benchmarks/tenants.py), e.g. 1000,10000",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    if args.quick:
        args.closed_seconds, args.open_seconds = 2.0, 2.0
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in TENANTS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {', '.join(TENANTS)}")
    extra = dict(kv.split("=", 1) for kv in args.env)
    started = time.monotonic()
    nats_server: Server = start_nats()
    mongo: Server = start_mongo()
    assert nats_server.proc is not None
    nats_pid = nats_server.proc.pid
    results: list[Result] = []
    target_port = free_port()
    target_proc = multiprocessing.Process(target=serve_target, args=(target_port,), daemon=True)
    target_proc.start()
    extra.setdefault("GATEHOOK_TARGETS__ALLOW_PRIVATE", "true")  # the endpoint is on loopback
    try:
        echo_proc = subprocess.Popen(
            [PY, str(HERE / "echo.py"), "--url", nats_server.url], stdout=subprocess.PIPE, text=True
        )
        assert echo_proc.stdout is not None
        echo_proc.stdout.readline()
        echo = Result("raw nats-py echo (ceiling)", 1)
        measure(
            echo, nats_server.url, f"gatehook.v1.trigger.x.{PA}", [echo_proc.pid], nats_pid, args
        )
        stop(echo_proc)  # type: ignore[arg-type]
        print(f"echo: {echo.throughput:.0f} req/s", flush=True)
        for mode in FLOOR_MODES if args.floor else ():
            results.append(floor(mode, nats_server.url, nats_pid, args))

        isolations = [i for i in args.isolations.split(",") if i]
        plan: list[tuple[str, int, list[str]]] = [(i, 1, scenarios) for i in isolations]
        if "custom JS" in scenarios and args.max_processes > 1:
            plan.append((isolations[0], 2, ["custom JS"]))
        set_up = False
        for isolation, processes, names in plan:
            env = {**extra, "GATEHOOK_SANDBOX__ISOLATION": isolation}
            worker = start_worker(processes, nats_server.url, mongo.url, env, args.event_loop)
            try:
                uvloop.run(wait_ready(nats_server.url, processes))
                if not set_up:
                    target_url = f"http://127.0.0.1:{target_port}/"
                    uvloop.run(set_up_tenants(nats_server.url, target_url))
                    set_up = True
                for name in names:
                    subject = f"gatehook.v1.trigger.{TENANTS[name][0]}.{PA}"
                    res = Result(name, processes, isolation)
                    # warm caches and interpreters
                    loadgen(nats_server.url, subject, "closed", 1.0, procs=1, in_flight=16)
                    measure(res, nats_server.url, subject, [worker.pid], nats_pid, args)
                    results.append(res)
                    print(
                        f"{name} ({isolation}) x{processes}: {res.throughput:.0f} req/s",
                        flush=True,
                    )
            finally:
                stop(worker)
    finally:
        target_proc.terminate()
        mongo.stop()
        nats_server.stop()
    md = tables(results, echo, args.rates)
    platform_rows = many_tenants([int(n) for n in args.many_tenants.split(",") if n])
    if platform_rows:
        import tenants

        md += "\n\n## Many tenants\n\n" + tenants.table(platform_rows, _TENANT_ARGS)
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
            "worker_env": extra,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": [r.__dict__ for r in [echo, *results]],
        "many_tenants": platform_rows,
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
