"""Many tenants: what a platform of N tenants costs a worker, cold and warm, in one run.

    .venv/bin/python benchmarks/tenants.py                       # 100, 1,000 and 10,000 tenants
    .venv/bin/python benchmarks/tenants.py --tenants 100,1000 --provision api

For each N: N tenants, each with one distinct custom-JS action attached to
external_authentication.post_authentication (``--provision api``: through the management
API over NATS, ``apply`` per tenant, 8 at a time, every change audited; ``store``: written
straight to storage, for sizes the API would take long to set up). Then, on real servers:

- storage: each decision-path read (a tenant's heads, a flow revision, an action version)
  timed against the server, for 200 random tenants;
- cold first decision: a fresh worker (no warm-up: nothing is recorded as active yet), one
  request to each of 200 tenants in turn, its first;
- steady CPU per decision (closed loop, 32 in flight) with uniformly random tenants, once
  every tenant has been served once, next to the same loop on one hot tenant;
- right after a restart: the worker is stopped (it records the tenants it served) and a new
  one started; its warm-up time, then 300 req/s of uniformly random tenants at once: p50 /
  p99 / max from each request's scheduled time, timeouts and error replies;
- RSS of the worker and its sandbox children;
- with the API: N more tenants given one and the same script (a file applied to many).

Writes results/tenants-<stamp>.json and .md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats
from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.model import (
    ActionDef,
    ActionKind,
    ActionVersion,
    Attachment,
    FlowRevision,
)
from gatehook.storage import MongoStore
from run import cpu_by_kind, pct, rss_mb, start_worker, stop, wait_ready

HERE = Path(__file__).resolve().parent
SUBJECT = "gatehook.v1.trigger.{}.external_authentication.post_authentication"
BODY = (
    '{"request_id":"%s","user":{"id":"u1","email":"ann@acme.com","metadata":{"tier":"gold"}},'
    '"request":{"ip":"203.0.113.7"}}'
)
FT, TR = FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION


def script(i: int) -> str:
    """Tenant ``i``'s own action (distinct source: a distinct interpreter per tenant)."""
    return (
        "export async function execute(input) {\n"
        "  if (!input.user.email.endsWith('@acme.com'))\n"
        f"    return {{kind: 'block', reason: 't{i}'}};\n"
        f"  return {{kind: 'continue', claims: {{tenant_no: {i},"
        " tier: input.user.metadata.tier}};\n"
        "}"
    )


def name(i: int) -> str:
    return f"tenant-{i:05d}"


async def provision_api(url: str, n: int, *, same: bool = False, prefix: str = "") -> float:
    """``apply`` per tenant over the management API, 8 at a time; ``same``: every tenant
    gets one script (a file applied to many tenants), else each its own."""
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    sem = asyncio.Semaphore(8)
    started = time.perf_counter()

    async def one(i: int) -> None:
        async with sem:
            file = {
                "actions": [
                    {"name": "check", "source": script(0 if same else i), "language": "js"}
                ],
                "flows": {"external_authentication": {"post_authentication": ["check@latest"]}},
            }
            await client.call(prefix + name(i), "apply", file=file)

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await nc.close()
    return time.perf_counter() - started


async def provision_store(mongo_url: str, n: int) -> float:
    """Straight to storage, compiled here once (the worker's compiler gives the same code)."""
    from gatehook.sandbox import SandboxPool
    from gatehook.settings import SandboxSettings

    store = MongoStore.connect(mongo_url, "bench", timeout_ms=5000)
    await store.ensure_indexes()
    started = time.perf_counter()
    now = datetime.now(UTC)
    async with SandboxPool(SandboxSettings(pool_size=1)) as pool:
        compiled = await pool.compile(script(0), language="js", name="check")
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        tenant = name(i)
        code = compiled.code.replace("t0'", f"t{i}'").replace("tenant_no: 0", f"tenant_no: {i}")
        async with sem:
            await store.insert_action(
                ActionDef(
                    tenant=tenant,
                    name="check",
                    kind=ActionKind.CUSTOM,
                    triggers=[TR],
                    created_at=now,
                )
            )
            await store.insert_version(
                ActionVersion(
                    tenant=tenant,
                    action="check",
                    version="1.0.0",
                    kind=ActionKind.CUSTOM,
                    language="js",
                    style=compiled.style,
                    source=script(i),
                    compiled=code,
                    content_hash=uuid.uuid4().hex,
                    created_at=now,
                )
            )
            await store.set_latest_version(tenant, "check", "1.0.0")
            flow = FlowRevision(
                tenant=tenant,
                flow_type=FT,
                revision=1,
                slots={TR: [Attachment(action="check", version="1.0.0")]},
                created_at=now,
            )
            await store.insert_flow(flow)
            await store.advance_flow(tenant, FT, 1, flow)

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await store.aclose()
    return time.perf_counter() - started


async def storage_reads(mongo_url: str, n: int) -> dict[str, dict[str, float]]:
    store = MongoStore.connect(mongo_url, "bench", timeout_ms=5000)
    sample = random.sample(range(n), min(200, n))
    out: dict[str, list[float]] = {"tenant heads": [], "flow revision": [], "action version": []}
    try:
        for i in sample:
            t = time.perf_counter()
            await store.tenant_heads(name(i))
            out["tenant heads"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await store.get_flow(name(i), FT, 1)
            out["flow revision"].append(time.perf_counter() - t)
            t = time.perf_counter()
            await store.get_version(name(i), "check", "1.0.0")
            out["action version"].append(time.perf_counter() - t)
    finally:
        await store.aclose()
    return {k: {"p50": pct(v, 50) * 1000, "p99": pct(v, 99) * 1000} for k, v in out.items()}


async def cold_firsts(url: str, n: int) -> dict[str, float]:
    nc = await nats.connect(url)
    lat = []
    errors = 0
    try:
        for i in random.sample(range(n), min(200, n)):
            t = time.perf_counter()
            msg = await nc.request(SUBJECT.format(name(i)), (BODY % uuid.uuid4().hex).encode(), 10)
            lat.append((time.perf_counter() - t) * 1000)
            errors += json.loads(msg.data).get("decision") != "continue"
    finally:
        await nc.close()
    return {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat), "errors": errors}


async def every_tenant_once(url: str, tenants: list[str]) -> None:
    """One request to each tenant (32 at a time): every tenant has been seen."""
    nc = await nats.connect(url)
    pending = iter(tenants)

    async def runner() -> None:
        for t in pending:
            await nc.request(SUBJECT.format(t), (BODY % uuid.uuid4().hex).encode(), 10)

    try:
        await asyncio.gather(*(runner() for _ in range(32)))
    finally:
        await nc.close()


async def closed_loop(url: str, tenants: list[str], seconds: float) -> int:
    nc = await nats.connect(url)
    done = 0
    end = time.monotonic() + seconds

    async def runner() -> None:
        nonlocal done
        while time.monotonic() < end:
            t = random.choice(tenants)
            await nc.request(SUBJECT.format(t), (BODY % uuid.uuid4().hex).encode(), 10)
            done += 1

    try:
        await asyncio.gather(*(runner() for _ in range(32)))
    finally:
        await nc.close()
    return done


async def open_loop(url: str, n: int, rate: float, seconds: float) -> dict[str, float]:
    nc = await nats.connect(url)
    lat: list[float] = []
    timeouts = errors = 0
    start = time.monotonic() + 0.05
    total = int(rate * seconds)

    async def one(k: int) -> None:
        nonlocal timeouts, errors
        at = start + k / rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        body = (BODY % uuid.uuid4().hex).encode()
        try:
            msg = await nc.request(SUBJECT.format(name(random.randrange(n))), body, 5)
        except nats.errors.TimeoutError:
            timeouts += 1
            return
        lat.append((time.monotonic() - at) * 1000)
        if json.loads(msg.data).get("decision") != "continue":
            errors += 1

    try:
        await asyncio.gather(*(one(k) for k in range(total)))
    finally:
        await nc.close()
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "timeouts": timeouts,
        "errors": errors,
        "n": total,
    }


def cpu_us(proc_pid: int, nats_pid: int, before: dict[str, float], done: int) -> dict[str, float]:
    after = cpu_by_kind([proc_pid, nats_pid])
    return {k: (after[k] - before.get(k, 0.0)) / max(done, 1) * 1e6 for k in after}


async def one_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    nats_srv = start_nats()
    mongo = start_mongo()
    env = {"GATEHOOK_WARM__REPORT_S": "1", **dict(kv.split("=", 1) for kv in args.env)}
    row: dict[str, Any] = {"tenants": n, "provision": args.provision}
    try:
        assert nats_srv.proc is not None
        nats_pid = nats_srv.proc.pid
        if args.provision == "api":
            worker = start_worker(1, nats_srv.url, mongo.url, env)
            await wait_ready(nats_srv.url, 1)
            row["setup_s"] = await provision_api(nats_srv.url, n)
            stop(worker)
        else:
            row["setup_s"] = await provision_store(mongo.url, n)
        print(f"{n} tenants: set up in {row['setup_s']:.1f} s", flush=True)
        row["storage_ms"] = await storage_reads(mongo.url, n)
        # a fresh worker, nothing recorded as active: every tenant is cold
        await _clear_activity(mongo.url)
        worker = start_worker(1, nats_srv.url, mongo.url, env)
        await wait_ready(nats_srv.url, 1)
        row["cold_first_ms"] = await cold_firsts(nats_srv.url, n)
        print(f"  cold first decision: {row['cold_first_ms']}", flush=True)
        everyone = [name(i) for i in range(n)]
        await every_tenant_once(nats_srv.url, everyone)
        before = cpu_by_kind([worker.pid, nats_pid])
        done = await closed_loop(nats_srv.url, everyone, args.seconds)
        row["uniform_cpu_us"] = cpu_us(worker.pid, nats_pid, before, done)
        row["uniform_rps"] = done / args.seconds
        before = cpu_by_kind([worker.pid, nats_pid])
        done = await closed_loop(nats_srv.url, [name(0)], args.seconds)
        row["hot_cpu_us"] = cpu_us(worker.pid, nats_pid, before, done)
        row["hot_rps"] = done / args.seconds
        row["rss_mb_warm"] = rss_mb([worker.pid])
        await asyncio.sleep(1.5)  # the served tenants are recorded (report every 1 s)
        stop(worker)
        started = time.monotonic()
        worker = start_worker(1, nats_srv.url, mongo.url, env)
        await wait_ready(nats_srv.url, 1)
        row["restart_ready_s"] = time.monotonic() - started
        row["after_restart"] = await open_loop(nats_srv.url, n, args.rate, args.seconds * 2)
        row["rss_mb"] = rss_mb([worker.pid])
        print(f"  after a restart at {args.rate:.0f} req/s: {row['after_restart']}", flush=True)
        if args.provision == "api" and args.same_script:
            row["setup_same_s"] = await provision_api(nats_srv.url, n, same=True, prefix="same-")
            print(f"  one script for {n} more tenants: {row['setup_same_s']:.1f} s", flush=True)
        stop(worker)
    finally:
        mongo.stop()
        nats_srv.stop()
    return row


async def _clear_activity(mongo_url: str) -> None:
    store = MongoStore.connect(mongo_url, "bench", timeout_ms=5000)
    try:
        await store.activity.delete_many({})
    finally:
        await store.aclose()


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def worker_cpu(d: dict[str, float]) -> float:
        return d.get("worker", 0.0) + d.get("sandbox", 0.0)

    lines = [
        f"Machine: {platform.machine()}, {platform.python_version()}; worker: 1 process,"
        " default settings; FerretDB (SQLite) unless GATEHOOK_TEST_MONGODB_URL is set.",
        "",
        "| tenants | set-up | heads read p50/p99 | version read p50/p99 | cold first decision"
        " p50/p99 | CPU µs/decision uniform (worker+children) | one hot tenant | ratio |"
        f" ready after restart | after restart at {args.rate:.0f}/s p50/p99/max |"
        " timeouts | errors | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["storage_ms"]
        u, h = worker_cpu(r["uniform_cpu_us"]), worker_cpu(r["hot_cpu_us"])
        a = r["after_restart"]
        lines.append(
            f"| {r['tenants']:,} | {r['setup_s']:.0f} s ({r['provision']}) |"
            f" {s['tenant heads']['p50']:.2f} / {s['tenant heads']['p99']:.2f} ms |"
            f" {s['action version']['p50']:.2f} / {s['action version']['p99']:.2f} ms |"
            f" {r['cold_first_ms']['p50']:.1f} / {r['cold_first_ms']['p99']:.1f} ms |"
            f" {u:.0f} | {h:.0f} | {u / h:.2f}x | {r['restart_ready_s']:.1f} s |"
            f" {a['p50']:.1f} / {a['p99']:.1f} / {a['max']:.0f} ms | {a['timeouts']} |"
            f" {a['errors']} | {r['rss_mb']:.0f} |"
        )
    same = [r for r in rows if "setup_same_s" in r]
    if same:
        lines += [
            "",
            "| tenants | set-up, a script each | set-up, one script for all |",
            "|---|---|---|",
        ]
        for r in same:
            lines.append(f"| {r['tenants']:,} | {r['setup_s']:.0f} s | {r['setup_same_s']:.0f} s |")
    return "\n".join(lines)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tenants", default="100,1000,10000")
    p.add_argument(
        "--provision",
        choices=["api", "store", "auto"],
        default="auto",
        help="auto: the API up to 1,000 tenants, storage above",
    )
    p.add_argument("--env", action="append", default=[], help="K=V for the worker")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument(
        "--no-same-script",
        dest="same_script",
        action="store_false",
        help="skip provisioning N more tenants with one script (the compile cache)",
    )
    args = p.parse_args()
    rows = []
    for n in (int(x) for x in args.tenants.split(",")):
        size_args = argparse.Namespace(**vars(args))
        if args.provision == "auto":
            size_args.provision = "api" if n <= 1000 else "store"
        rows.append(await one_size(n, size_args))
    md = table(rows, args)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"tenants-{stamp}.json").write_text(json.dumps(rows, indent=1))
    (out / f"tenants-{stamp}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    uvloop.run(main())
