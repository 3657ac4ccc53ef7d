"""Hostile scripts next to a quiet tenant: what one tenant's attack costs another, per
isolation level, in one run.

    .venv/bin/python benchmarks/hostile.py                 # both levels, ~2 minutes
    .venv/bin/python benchmarks/hostile.py --isolations worker --seconds 5

On real servers, one ``gatehook worker`` per isolation level (``process``, ``worker``). A quiet
tenant's custom-JS action is triggered at ``--rate`` req/s (open loop, latency from each
request's scheduled time) alone, then while hostile tenants trigger theirs (each kind its own
tenant, its action with a 200 ms timeout, ``--hostile-rate`` req/s each): an endless loop, a
memory bomb, deep recursion, a promise that never settles, an endless microtask chain,
prototype pollution, and a 50 MB result. Reported per level: the quiet tenant's p50 / p99 /
max alone and under attack (and the ratio), how each hostile request ended (its error) and
how long past its timeout the reply came, and the worker's RSS (and its children's) before
and after the attack. Writes results/hostile-<stamp>.json and .md, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats
from run import PA, pct, proc_tree, start_worker, stop, wait_ready

HERE = Path(__file__).resolve().parent
TIMEOUT_MS = 200
QUIET = """export function execute(input) {
  if (!input.user.email.endsWith('@acme.com')) return {kind: 'block', reason: 'domain'};
  const a = []; for (let i = 0; i < 50; i++) a.push(i * 2);
  return {kind: 'continue', claims: {uid: input.user.id, n: a.length, polluted: ({}).polluted}};
}"""
HOSTILE = {
    "endless loop": "export function execute() { while (true) {} }",
    "memory bomb": "export function execute() { const a = [];"
    " while (true) a.push('x'.repeat(1e6) + a.length); }",
    "deep recursion": "export function execute() { function f(n) { return f(n + 1) + 1; }"
    " return f(0); }",
    "never-settling promise": "export function execute() { return new Promise(() => {}); }",
    "endless microtasks": "export function execute() {"
    " const spin = () => Promise.resolve().then(spin); return spin(); }",
    "prototype pollution": "export function execute() { Object.prototype.polluted = 'yes';"
    " Array.prototype.push = function () { return 0; }; JSON.stringify = () => '{}';"
    " return {kind: 'continue'}; }",
    "50 MB result": "export function execute() {"
    " return {kind: 'continue', claims: {big: 'x'.repeat(50 * 1024 * 1024)}}; }",
}
BODY = (
    '{"request_id":"%s","user":{"id":"u1","email":"ann@acme.com","metadata":{}},'
    '"request":{"ip":"203.0.113.7"},"deadline_ms":3000}'
)


def rss_by_kind(pid: int) -> dict[str, float]:
    out: dict[str, float] = {"worker": 0.0, "children": 0.0}
    for p in proc_tree([pid]):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        kb = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
        out["children" if b"gatehook.sandbox.child" in cmd else "worker"] += kb / 1024
    return out


def slug(name: str) -> str:
    return "hostile-" + "".join(c if c.isalnum() else "-" for c in name.lower())


async def set_up(url: str) -> None:
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    try:
        tenants = {"quiet": QUIET} | {slug(k): v for k, v in HOSTILE.items()}
        for tenant, source in tenants.items():
            file = {
                "actions": [
                    {"name": "act", "source": source, "language": "js", "timeout_ms": TIMEOUT_MS}
                ],
                "flows": {"external_authentication": {"post_authentication": ["act@latest"]}},
            }
            await client.call(tenant, "apply", file=file)
    finally:
        await nc.close()


async def steady(
    nc: nats.NATS, tenant: str, rate: float, seconds: float, timeout: float = 5.0
) -> list[tuple[float, dict[str, Any] | None]]:
    """(ms from the scheduled time, the reply or None) for each request of an open loop."""
    subject = f"gatehook.v1.trigger.{tenant}.{PA}"
    out: list[tuple[float, dict[str, Any] | None]] = []
    start = time.monotonic()
    n = int(rate * seconds)

    async def one(at: float) -> None:
        try:
            msg = await nc.request(subject, (BODY % uuid.uuid4().hex).encode(), timeout=timeout)
            reply: dict[str, Any] | None = json.loads(msg.data)
        except nats.errors.TimeoutError:
            reply = None
        out.append(((time.monotonic() - at) * 1000, reply))

    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return out


def lat_stats(runs: list[tuple[float, dict[str, Any] | None]]) -> dict[str, float]:
    lat = [ms for ms, r in runs if r is not None]
    return {
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "unanswered": float(sum(1 for _, r in runs if r is None)),
        "n": float(len(runs)),
    }


async def level(url: str, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        await steady(nc, "quiet", args.rate, 2.0)  # warm
        for name in HOSTILE:  # load each hostile script once (its context, its child)
            await steady(nc, slug(name), 2, 1.0)
        quiet = lat_stats(await steady(nc, "quiet", args.rate, args.seconds))
        rss_before = rss_by_kind(pid)
        attacks = [
            steady(nc, slug(name), args.hostile_rate, args.seconds, timeout=10.0)
            for name in HOSTILE
        ]
        results = await asyncio.gather(steady(nc, "quiet", args.rate, args.seconds), *attacks)
        attacked = lat_stats(results[0])
        await asyncio.sleep(2.0)  # what the attack left behind, once it is over
        rss_after = rss_by_kind(pid)
        hostile: dict[str, Any] = {}
        for name, runs in zip(HOSTILE, results[1:], strict=True):
            errors: dict[str, int] = {}
            over = []
            for ms, reply in runs:
                if reply is None:
                    errors["no reply"] = errors.get("no reply", 0) + 1
                    continue
                actions = reply.get("actions") or [{}]
                err = str(
                    actions[0].get("error")
                    or actions[0].get("outcome")
                    or (reply.get("error") or {}).get("code")
                    or "?"
                )
                kind = err.split(":")[0]
                errors[kind] = errors.get(kind, 0) + 1
                over.append(ms - TIMEOUT_MS)
            hostile[name] = {
                "errors": errors,
                "past_timeout_p50": pct(over, 50),
                "past_timeout_max": max(over, default=float("nan")),
            }
        return {
            "quiet": quiet,
            "attacked": attacked,
            "rss_before": rss_before,
            "rss_after": rss_after,
            "hostile": hostile,
        }
    finally:
        await nc.close()


def report(levels: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Quiet tenant at {args.rate:.0f} req/s, alone and while {len(HOSTILE)} hostile tenants"
        f" send {args.hostile_rate:.0f} req/s each (ms from each request's scheduled time):",
        "",
        "| isolation | alone p50 | alone p99 | attacked p50 | attacked p99 | attacked max "
        "| p99 ratio | unanswered | worker RSS before -> after MB | children RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for iso, r in levels.items():
        q, a = r["quiet"], r["attacked"]
        lines.append(
            f"| {iso} | {q['p50']:.2f} | {q['p99']:.2f} | {a['p50']:.2f} | {a['p99']:.2f} "
            f"| {a['max']:.1f} | {a['p99'] / q['p99']:.2f}x | {a['unanswered']:.0f} "
            f"| {r['rss_before']['worker']:.0f} -> {r['rss_after']['worker']:.0f} "
            f"| {r['rss_before']['children']:.0f} -> {r['rss_after']['children']:.0f} |"
        )
    lines += [
        "",
        f"Hostile requests (timeout {TIMEOUT_MS} ms): how they ended, and the reply's time past"
        " the timeout (ms):",
        "",
        "| script | isolation | outcomes | past timeout p50 | past timeout max |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for name in HOSTILE:
        for iso, r in levels.items():
            h = r["hostile"][name]
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(h["errors"].items()))
            lines.append(
                f"| {name} | {iso} | {outcomes} | {h['past_timeout_p50']:.1f} "
                f"| {h['past_timeout_max']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--isolations", default="process,worker")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--hostile-rate", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    nats_server = start_nats()
    mongo = start_mongo()
    levels: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    try:
        first = True
        for iso in [i for i in args.isolations.split(",") if i]:
            worker = start_worker(
                1, nats_server.url, mongo.url, {"GATEHOOK_SANDBOX__ISOLATION": iso}
            )
            try:
                uvloop.run(wait_ready(nats_server.url, 1))
                if first:
                    uvloop.run(set_up(nats_server.url))
                    first = False
                levels[iso] = uvloop.run(level(nats_server.url, args, worker.pid))
                print(f"{iso}: done", flush=True)
            finally:
                stop(worker)
    finally:
        mongo.stop()
        nats_server.stop()
    md = report(levels, args)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": vars(args) | {"out": str(args.out)},
        "elapsed_s": round(time.monotonic() - started, 1),
        "levels": levels,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"hostile-{stamp}.json").write_text(json.dumps(meta, indent=2))
    (args.out / f"hostile-{stamp}.md").write_text(md + "\n")
    print()
    print(md)


if __name__ == "__main__":
    main()
