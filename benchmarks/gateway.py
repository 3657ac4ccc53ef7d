"""What `gatehook http` adds: a ZITADEL call through the gateway next to the same decision
asked over NATS, in one run.

    .venv/bin/python benchmarks/gateway.py            # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/gateway.py --seconds 5

Starts nats-server, a MongoDB-protocol server, `gatehook worker` and `gatehook http`, and a
tenant whose `complement_token.pre_userinfo_creation` slot runs a ZITADEL v1 script. Then,
closed loop (``--in-flight`` calls at once) and at a steady ``--rate`` (latency from each
call's scheduled time), from this process:

- **NATS**: the trigger request the gateway makes of the call, sent as a login service does;
- **HTTP**: ZITADEL's signed `function/preuserinfo` call to `POST /zitadel/<tenant>` (the
  gateway verifies, maps, asks the worker over NATS, maps back);
- **HTTP, Hydra**: Ory Hydra's token hook call of an authorization code grant (the body
  Hydra v2.3 sends) to `POST /hydra/<tenant>/token`: two trigger requests at once (the
  access token's and the ID token's slots), the consent's claims merged back.

Reports throughput, latency percentiles and CPU µs per call of the worker (with its sandbox
children), the gateway and nats-server (from /proc, over each phase); the load generator's
own CPU is not counted. Writes results/gateway-<stamp>.md and prints it.
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
from pathlib import Path
from typing import Any

import aiohttp
import nats
import uvloop

from gatehook.admin.client import AdminClient
from gatehook.devservers import free_port, start_mongo, start_nats
from gatehook.domain.providers import zitadel
from gatehook.domain.targets import signature
from run import cpu_by_kind, pct, start_worker, stop, wait_ready

HERE = Path(__file__).resolve().parent
PY = sys.executable
TENANT = "bench-gw"
HYDRA_TENANT = "bench-hydra"
KEY = "bench-signing-key-0123456789"
HYDRA_KEY = "bench-hydra-key-0123456789"
HYDRA_CALL: dict[str, Any] = {  # as Hydra v2.3 posts it for an authorization code grant
    "session": {
        "id_token": {
            "id_token_claims": {
                "sub": "user-1",
                "aud": ["app1"],
                "ext": {"email": "mini@acme.com", "sid": "s1"},
            },
            "subject": "user-1",
            "username": "",
        },
        "extra": {"org": "acme"},
        "client_id": "app1",
        "consent_challenge": "c1",
    },
    "request": {
        "client_id": "app1",
        "requested_scopes": ["openid", "offline"],
        "granted_scopes": [],
        "granted_audience": [],
        "grant_types": ["authorization_code"],
        "payload": {"grant_type": ["authorization_code"]},
    },
}
TOKEN_SCRIPT = """export function execute(input) {
  return {kind: 'continue', claims: {tier: 'gold'}};
}"""
SCRIPT = """function claims(ctx, api) {
  api.v1.claims.setClaim('dept', ctx.v1.user.getMetadata().metadata[0].value);
  api.v1.claims.setClaim('client', ctx.v1.application.getClientId());
}"""
CALL: dict[str, Any] = {
    "function": "function/preuserinfo",
    "userinfo": {"sub": "u1", "email": "mini@acme.com"},
    "user": {
        "id": "u1",
        "username": "mini@acme.com",
        "human": {"first_name": "Minnie", "email": "mini@acme.com", "is_email_verified": True},
    },
    "user_metadata": [{"key": "dept", "value": "ZW5naW5lZXJpbmc="}],
    "org": {"id": "o1", "name": "Acme"},
    "application": {"client_id": "app1"},
}


async def set_up(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await AdminClient(nc, actor="bench", timeout=60).call(
            TENANT,
            "apply",
            file={
                "actions": [{"name": "claims", "source": SCRIPT}],
                "flows": {"complement_token": {"pre_userinfo_creation": ["claims@latest"]}},
                "ingress": {"zitadel": {"signing_keys": [KEY]}},
            },
        )
        await AdminClient(nc, actor="bench", timeout=60).call(
            HYDRA_TENANT,
            "apply",
            file={
                "actions": [{"name": "token", "source": TOKEN_SCRIPT}],
                "flows": {
                    "complement_token": {
                        "pre_userinfo_creation": ["token@latest"],
                        "pre_access_token_creation": ["token@latest"],
                    }
                },
                "ingress": {"hydra": {"api_keys": [HYDRA_KEY]}},
            },
        )
    finally:
        await nc.drain()


async def open_loop(call: Any, seconds: float, rate: float) -> tuple[int, list[float]]:
    """``call()`` at ``rate`` a second for ``seconds``; latencies (ms) from each call's
    scheduled time (a late start counts)."""
    lat: list[float] = []
    tasks = []
    start = time.perf_counter()

    async def one(at: float) -> None:
        await call()
        lat.append((time.perf_counter() - at) * 1000)

    for i in range(int(seconds * rate)):
        at = start + i / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return len(lat), lat


async def closed_loop(call: Any, seconds: float, in_flight: int) -> tuple[int, list[float]]:
    """``in_flight`` loops calling ``call()`` for ``seconds``; the count and latencies (ms)."""
    lat: list[float] = []
    end = time.monotonic() + seconds

    async def one() -> None:
        while time.monotonic() < end:
            started = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one() for _ in range(in_flight)))
    return len(lat), lat


def start_gateway(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    env.update(GATEHOOK_NATS_URL=url, GATEHOOK_GATEWAY__PORT=str(port))
    return subprocess.Popen(
        [PY, "-m", "gatehook", "http", "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
    )


async def run(args: argparse.Namespace) -> str:
    nats_server = start_nats()
    mongo = start_mongo()
    worker = start_worker(1, nats_server.url, mongo.url)
    port = free_port()
    gateway = start_gateway(nats_server.url, port)
    rows: list[dict[str, Any]] = []
    try:
        await wait_ready(nats_server.url, 1)
        await set_up(nats_server.url)
        nc = await nats.connect(nats_server.url)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.in_flight, keepalive_timeout=60)
        )
        base = f"http://127.0.0.1:{port}/zitadel/{TENANT}"
        for _ in range(100):  # the gateway is up
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raw = json.dumps(CALL).encode()
        subject = f"gatehook.v1.trigger.{TENANT}.complement_token.pre_userinfo_creation"

        async def over_nats() -> None:
            ask = zitadel.ask(CALL)
            msg = await nc.request(subject, json.dumps(ask.request).encode(), timeout=10)
            assert b'"decision":"continue"' in msg.data.replace(b" ", b""), msg.data[:200]

        async def over_http() -> None:
            headers = {"ZITADEL-Signature": signature(KEY, int(time.time()), raw)}
            async with session.post(base, data=raw, headers=headers) as r:
                body = await r.json()
                assert r.status == 200, body
                assert body["append_claims"][0] == {"key": "dept", "value": "engineering"}

        hydra_raw = json.dumps(HYDRA_CALL).encode()

        async def over_hydra() -> None:
            url = f"http://127.0.0.1:{port}/hydra/{HYDRA_TENANT}/token"
            async with session.post(url, data=hydra_raw, headers={"Authorization": HYDRA_KEY}) as r:
                body = await r.json()
                assert r.status == 200, body
                assert body["session"]["access_token"]["tier"] == "gold", body

        pids = [worker.pid, gateway.pid, nats_server.proc.pid if nats_server.proc else 0]
        paths = (
            ("NATS (trigger request)", over_nats),
            ("HTTP via gateway (ZITADEL)", over_http),
            ("HTTP via gateway (Hydra token hook: 2 trigger requests)", over_hydra),
        )
        for load in ("closed", f"{args.rate:.0f}/s"):
            for name, call in paths:
                await closed_loop(call, 1.0, args.in_flight)  # warm
                before = _cpu(pids, gateway.pid)
                if load == "closed":
                    done, lat = await closed_loop(call, args.seconds, args.in_flight)
                else:
                    done, lat = await open_loop(call, args.seconds, args.rate)
                after = _cpu(pids, gateway.pid)
                rows.append(
                    {
                        "path": name,
                        "load": load,
                        "rps": done / args.seconds,
                        "p50": pct(lat, 50),
                        "p99": pct(lat, 99),
                        "cpu": {k: (after[k] - before.get(k, 0.0)) / done * 1e6 for k in after},
                    }
                )
                print(f"{name}, {load}: {done / args.seconds:.0f} calls/s", flush=True)
        await session.close()
        await nc.drain()
    finally:
        stop(gateway)
        stop(worker)
        mongo.stop()
        nats_server.stop()
    return report(rows, args)


def _cpu(pids: list[int], gateway_pid: int) -> dict[str, float]:
    """CPU seconds by kind, the gateway counted apart from the worker."""
    out = cpu_by_kind([p for p in pids if p and p != gateway_pid])
    gw = cpu_by_kind([gateway_pid])
    out["gateway"] = sum(gw.values())
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    kinds = ("worker", "sandbox", "gateway", "nats-server")
    lines = [
        f"### The gateway ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, {args.in_flight} in flight, {args.seconds:.0f} s per path)",
        "",
        "| load | path | calls/s | p50 ms | p99 ms | "
        + " | ".join(f"CPU µs/call {k}" for k in kinds)
        + " | CPU µs/call total |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " | ---: |",
    ]
    for r in rows:
        cpu = [r["cpu"].get(k, 0.0) for k in kinds]
        lines.append(
            f"| {r['load']} | {r['path']} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            + " | ".join(f"{c:.0f}" for c in cpu)
            + f" | {sum(cpu):.0f} |"
        )
    lines.append("")
    for nats_row in (r for r in rows if r["path"].startswith("NATS")):
        for http_row in (r for r in rows if r["load"] == nats_row["load"] and r is not nats_row):
            total = [sum(r["cpu"].get(k, 0.0) for k in kinds) for r in (nats_row, http_row)]
            lines.append(
                f"- {nats_row['load']}, {http_row['path']}: p50 "
                f"+{http_row['p50'] - nats_row['p50']:.2f} ms "
                f"({http_row['p50'] / nats_row['p50']:.2f}x), CPU per call "
                f"+{total[1] - total[0]:.0f} µs ({total[1] / total[0]:.2f}x), of which the "
                f"gateway {http_row['cpu'].get('gateway', 0.0):.0f} µs."
            )
    text = "\n".join(lines) + "\n"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--rate", type=float, default=300.0, help="the open loop's calls/s")
    args = parser.parse_args()
    print(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
