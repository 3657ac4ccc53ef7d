"""Crowding: one tenant floods a worker and the gateway, another keeps signing in, in one run.

    .venv/bin/python benchmarks/crowding.py               # ~90 s on 2 cores
    .venv/bin/python benchmarks/crowding.py --seconds 5

Starts nats-server, a MongoDB-protocol server, one `gatehook worker`, `gatehook http` and a
slow HTTP endpoint (it answers after ``--slow-ms`` give or take half). Tenant ``acme`` has an
action that calls the slow endpoint (a target); ``acme-cheap`` a template; ``globex`` a
template. globex sends a steady ``--rate`` of sign-ins (latency from each one's scheduled
time) while:

- nothing else runs (quiet);
- acme keeps ``--flood`` requests in flight over NATS (each holds a worker slot
  ``--slow-ms``);
- acme-cheap keeps ``--cheap`` requests in flight over NATS (cheap, so the worker's CPU is
  what they take);
- through the gateway, acme keeps ``--connections`` Kratos calls in flight with its own key
  while globex calls the gateway at ``--rate``;
- acme-cheap's flood again, on a worker whose admission shares slots but not the loop's time
  (``GATEHOOK_ADMISSION__BUSY=1``), to compare in the same run.

Reports, for globex, p50/p99 and the p99 against the quiet run's, and what was refused; for
the flooding tenant, what was answered and refused. Writes results/crowding-<stamp>.md and
prints it.
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
from pathlib import Path
from typing import Any

import aiohttp
import nats
import uvloop

from gatehook.admin.client import AdminClient
from gatehook.devservers import free_port, start_mongo, start_nats
from run import pct, start_worker, stop, wait_ready

HERE = Path(__file__).resolve().parent
PY = sys.executable
SLOT = "external_authentication.post_authentication"
KEYS = {"acme": "acme-kratos-key-0123456789", "globex": "globex-kratos-key-0123456789"}


def serve_slow(port: int, ms: int) -> None:
    """An endpoint that answers after ``ms`` give or take half of it (uniformly): a tenant's
    slow backend."""
    import random

    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(ms * random.uniform(0.5, 1.5) / 1000)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", handle)
    uvloop.run(web._run_app(app, host="127.0.0.1", port=port, print=None))


async def set_up(url: str, slow_url: str) -> None:
    nc = await nats.connect(url)
    client = AdminClient(nc, actor="bench", timeout=120)
    gate = {"name": "gate", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}}
    flows = {"external_authentication": {"post_authentication": ["gate@latest"]}}
    try:
        for tenant in ("globex", "acme-cheap"):
            file: dict[str, Any] = {"actions": [gate], "flows": flows}
            if tenant in KEYS:
                file["ingress"] = {"kratos": {"api_keys": [KEYS[tenant]]}}
            await client.call(tenant, "apply", file=file)
        slow = {
            "name": "slow",
            "target": {"endpoint": slow_url, "type": "webhook"},
            "timeout_ms": 5000,
            "allowed_to_fail": True,
        }
        await client.call(
            "acme",
            "apply",
            file={
                "actions": [slow],
                "flows": {"external_authentication": {"post_authentication": ["slow@latest"]}},
                "ingress": {"kratos": {"api_keys": [KEYS["acme"]]}},
            },
        )
    finally:
        await nc.drain()


def loadgen(url: str, tenant: str, seconds: float, **mode: Any) -> subprocess.Popen[str]:
    """benchmarks/loadgen.py for ``tenant``: ``in_flight=N`` (closed loop, the flooder's:
    at nice 19, since in a deployment the flooder's own CPU is another machine's and here
    it would take the cores the worker and globex's client run on) or ``rate=R``."""
    args = [PY, str(HERE / "loadgen.py"), "--url", url, "--seconds", str(seconds)]
    if "in_flight" in mode:
        args = ["nice", "-n", "19", *args]
    args += ["--subject", f"gatehook.v1.trigger.{tenant}.{SLOT}", "--timeout", "10"]
    if "in_flight" in mode:
        args += ["--mode", "closed", "--in-flight", str(mode["in_flight"])]
    else:
        args += ["--mode", "open", "--rate", str(mode["rate"])]
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def kratos_body(n: int) -> bytes:
    body = {
        "flow": {"id": f"f{n}", "type": "browser"},
        "identity": {"id": f"u{n}", "traits": {"email": "ann@acme.com"}},
        "request_headers": {"User-Agent": "bench"},
    }
    return json.dumps(body).encode()


async def http_calls(
    base: str, tenant: str, seconds: float, *, rate: float = 0, connections: int = 0
) -> dict[str, Any]:
    """``tenant``'s Kratos calls through the gateway for ``seconds``: at ``rate`` a second
    (latency from each call's scheduled time), or ``connections`` at once, each calling
    again when answered. Latencies (ms) of the calls answered 204, and counts by status."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = f"{base}/kratos/{tenant}/external_authentication/post_authentication"
    end = time.perf_counter() + seconds
    lat: list[float] = []
    statuses: dict[int, int] = {}

    async def call(n: int, scheduled: float) -> None:
        try:
            async with session.post(
                url, data=kratos_body(n), headers={"Authorization": KEYS[tenant]}
            ) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError:
            status = 0
        statuses[status] = statuses.get(status, 0) + 1
        if status == 204:
            lat.append((time.perf_counter() - scheduled) * 1000)

    async def loop() -> None:
        n = 0
        while time.perf_counter() < end:
            n += 1
            await call(n, time.perf_counter())

    async def steady() -> None:
        started = time.perf_counter()
        tasks = []
        for i in range(int(seconds * rate)):
            at = started + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(i, at)))
        await asyncio.gather(*tasks)

    try:
        await (steady() if rate else asyncio.gather(*(loop() for _ in range(connections))))
    finally:
        await session.close()
    return {"lat": lat, "status": {str(k): v for k, v in statuses.items()}}


def http_flood(base: str, seconds: float, connections: int) -> subprocess.Popen[str]:
    """acme's calls through the gateway, from a process of their own at nice 19 (see
    ``loadgen``)."""
    args = [PY, __file__, "--flood-http", base, "--seconds", str(seconds)]
    args += ["--connections", str(connections)]
    return subprocess.Popen(["nice", "-n", "19", *args], stdout=subprocess.PIPE, text=True)


def row(
    name: str, globex: dict[str, Any], quiet_p99: float | None, flooder: dict[str, Any] | None
) -> dict[str, Any]:
    lat = globex["lat"]
    p99 = pct(lat, 99) if lat else float("nan")
    return {
        "scenario": name,
        "p50": pct(lat, 50) if lat else float("nan"),
        "p99": p99,
        "vs_quiet": p99 / quiet_p99 if quiet_p99 else None,
        "globex_ok": len(lat),
        "globex_refused": globex["refused"],
        "flooder": flooder,
    }


def nats_numbers(data: dict[str, Any]) -> dict[str, Any]:
    return {"lat": data["lat"], "refused": data["errors"]}


def http_numbers(tally: dict[str, Any]) -> dict[str, Any]:
    refused = sum(n for status, n in tally["status"].items() if status != "204")
    return {"lat": tally["lat"], "refused": refused, "status": tally["status"]}


def start_gateway(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(GATEHOOK_NATS_URL=url, GATEHOOK_GATEWAY__PORT=str(port))
    return subprocess.Popen(
        [PY, "-m", "gatehook", "http", "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL
    )


async def run(args: argparse.Namespace) -> str:
    nats_server, mongo = start_nats(), start_mongo()
    slow_port, gw_port = free_port(), free_port()
    slow = multiprocessing.Process(target=serve_slow, args=(slow_port, args.slow_ms), daemon=True)
    slow.start()
    # acme's backend is slow, not refusing: its calls hold their slots for --slow-ms, and
    # end within the request's 2 s budget (a call past it, or a pool smaller than acme's
    # share, fails; five in a row open the breaker and acme's flood becomes a cheap one)
    extra = {
        "GATEHOOK_TARGETS__CONNECTIONS_PER_HOST": "512",
        "GATEHOOK_TARGETS__ALLOW_PRIVATE": "true",
    }
    worker = start_worker(1, nats_server.url, mongo.url, extra)
    gateway = start_gateway(nats_server.url, gw_port)
    rows: list[dict[str, Any]] = []
    url, s = nats_server.url, args.seconds
    try:
        await wait_ready(url, 1)
        await set_up(url, f"http://127.0.0.1:{slow_port}/")
        finished(loadgen(url, "globex", 1, rate=args.rate))  # warm
        quiet = nats_numbers(finished(loadgen(url, "globex", s, rate=args.rate)))
        rows.append(row("NATS: quiet", quiet, None, None))
        quiet_p99 = rows[0]["p99"]
        for name, tenant, in_flight in (
            (f"NATS: acme holds {args.flood} slow requests", "acme", args.flood),
            (f"NATS: acme-cheap keeps {args.cheap} in flight", "acme-cheap", args.cheap),
        ):
            flood = loadgen(url, tenant, s + 2, in_flight=in_flight)
            await asyncio.sleep(1)
            globex = nats_numbers(finished(loadgen(url, "globex", s, rate=args.rate)))
            flooded = finished(flood)
            flooder = {"answered": len(flooded["lat"]), "refused": flooded["errors"]}
            rows.append(row(name, globex, quiet_p99, flooder))
        base = f"http://127.0.0.1:{gw_port}"
        deadline = time.monotonic() + 60
        while True:  # the gateway's port
            try:
                async with aiohttp.ClientSession() as probe, probe.get(base + "/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gatehook http did not start")
            await asyncio.sleep(0.1)
        await http_calls(base, "globex", 1, rate=args.rate)  # warm
        globex = await http_calls(base, "globex", s, rate=args.rate)
        quiet_http = row("HTTP (Kratos route): quiet", http_numbers(globex), None, None)
        rows.append(quiet_http)
        flood = http_flood(base, s + 2, args.connections)
        await asyncio.sleep(1)
        globex = await http_calls(base, "globex", s, rate=args.rate)
        numbers = http_numbers(finished(flood))
        flooder = {"answered": numbers["status"].get("204", 0), "refused": numbers["refused"]}
        rows.append(
            row(
                f"HTTP: acme keeps {args.connections} slow calls in flight",
                http_numbers(globex),
                quiet_http["p99"],
                flooder,
            )
        )
        # the same cheap flood on a worker whose admission shares slots, not time
        stop(worker)
        worker = start_worker(1, url, mongo.url, {**extra, "GATEHOOK_ADMISSION__BUSY": "1"})
        await wait_ready(url, 1)
        finished(loadgen(url, "globex", 1, rate=args.rate))  # warm
        flood = loadgen(url, "acme-cheap", s + 2, in_flight=args.cheap)
        await asyncio.sleep(1)
        globex = nats_numbers(finished(loadgen(url, "globex", s, rate=args.rate)))
        flooded = finished(flood)
        flooder = {"answered": len(flooded["lat"]), "refused": flooded["errors"]}
        name = f"NATS: acme-cheap keeps {args.cheap} in flight, time not shared (BUSY=1)"
        rows.append(row(name, globex, quiet_p99, flooder))
    finally:
        stop(gateway)
        stop(worker)
        slow.terminate()
        mongo.stop()
        nats_server.stop()
    return report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Crowding: one tenant floods, another signs in",
        "",
        f"{platform.node()}, {os.cpu_count()} cores; `benchmarks/crowding.py --seconds"
        f" {args.seconds:g}`; globex at {args.rate:g} sign-ins/s; the slow backend answers"
        f" after {args.slow_ms} ms; a worker's 256 slots, the gateway's 512, default admission.",
        "",
        "| scenario | globex p50 ms | globex p99 ms | p99 vs quiet | globex decided | globex"
        " refused | flooder answered | flooder refused |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        vs = f"{r['vs_quiet']:.2f}x" if r["vs_quiet"] else "1"
        flooder = r["flooder"] or {}
        lines.append(
            f"| {r['scenario']} | {r['p50']:.2f} | {r['p99']:.2f} | {vs} | {r['globex_ok']} |"
            f" {r['globex_refused']} | {flooder.get('answered', '')} |"
            f" {flooder.get('refused', '')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="globex's sign-ins a second")
    parser.add_argument("--flood", type=int, default=300, help="acme's slow requests in flight")
    parser.add_argument("--cheap", type=int, default=200, help="acme-cheap's requests in flight")
    parser.add_argument("--connections", type=int, default=160, help="acme's gateway calls")
    parser.add_argument("--slow-ms", type=int, default=1200)
    parser.add_argument("--flood-http", help=argparse.SUPPRESS)  # the flooder's own process
    args = parser.parse_args()
    if args.flood_http:
        calls = http_calls(args.flood_http, "acme", args.seconds, connections=args.connections)
        print(json.dumps(uvloop.run(calls)))
        return
    text = uvloop.run(run(args))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"crowding-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
