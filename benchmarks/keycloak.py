"""What gatehook's step costs a Keycloak sign-in: direct-grant logins (the password grant at
Keycloak's token endpoint) of a realm without gatehook next to realms with it, in one run.

    .venv/bin/python benchmarks/keycloak.py              # ~7 minutes on 2 cores
    .venv/bin/python benchmarks/keycloak.py --seconds 10

Needs scripts/install-keycloak. Starts nats-server, a MongoDB-protocol server, `gatehook
worker` and Keycloak 26.7.3 with the extension (dev mode, in-memory database, as the tests
run it), and three realms of one tenant, set up as docs/integrations/keycloak.md says:

- **without gatehook**: Keycloak's own direct grant flow;
- **with the step**: "gatehook Actions" at the end of the direct grant flow
  (`internal_authentication.post_authentication`, a script that adds a claim);
- **with the step and the claims mapper**: and "gatehook claims" on the client
  (`complement_token.pre_access_token_creation` and `pre_userinfo_creation`: three trigger
  requests per login).

Closed loop, ``--in-flight`` logins at once. Reports logins/s, latency percentiles and CPU
ms per login of Keycloak, the worker (with its sandbox children) and nats-server, from /proc
over each phase. Keycloak hashes the password on every login (Argon2, its default): that is
most of a login's cost, with or without gatehook, so each realm also runs with a password
policy of one PBKDF2 iteration, where the rest of a login shows. Writes
results/keycloak-<stamp>.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from itertools import product
from pathlib import Path
from typing import Any

import aiohttp
import nats

from gatehook.admin.client import AdminClient
from gatehook.devservers import start_mongo, start_nats

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/keycloak.py: Keycloak as the tests start it
from tests.keycloak import (  # noqa: E402
    CLIENT_SECRET,
    KeycloakAdmin,
    configure_realm,
    start_keycloak,
)

from run import cpu_by_kind, pct, start_worker, stop, wait_ready  # noqa: E402

TENANT = "bench-kc"
PASSWORD = "a-long-password-of-the-benchmark-1"
FILE = {
    "actions": [
        {
            "name": "sign-in",
            "source": "export function execute(input) {\n"
            "  return {kind: 'continue', claims: {tier: 'gold'}};\n}",
        },
        {
            "name": "token",
            "source": "export function execute(input) {\n"
            "  return {kind: 'continue', claims: {dept: 'engineering'}};\n}",
        },
    ],
    "flows": {
        "internal_authentication": {"post_authentication": ["sign-in@latest"]},
        "complement_token": {
            "pre_userinfo_creation": ["token@latest"],
            "pre_access_token_creation": ["token@latest"],
        },
    },
}
REALMS = (  # name, (step, mapper), what it shows
    ("bench-plain", (False, False), "without gatehook"),
    ("bench-step", (True, False), "with the step (1 trigger request)"),
    ("bench-mapped", (True, True), "with the step and the claims mapper (3 trigger requests)"),
)
HASH_NAMES = {"": "Argon2, Keycloak's default", "-1": "PBKDF2, 1 iteration"}
HASHES = (  # realm suffix, password policy: Keycloak's default hashing, and next to nothing
    ("", ""),
    ("-1", "hashAlgorithm(pbkdf2-sha256) and hashIterations(1)"),
)


async def closed_loop(
    call: Callable[[], Awaitable[None]], seconds: float, in_flight: int
) -> tuple[int, list[float]]:
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


def _cpu(keycloak: int, worker: int, nats_pid: int) -> dict[str, float]:
    out = {"Keycloak": sum(cpu_by_kind([keycloak]).values())}
    out.update(cpu_by_kind([worker, nats_pid]))
    return out


async def run(args: argparse.Namespace) -> str:
    nats_server = start_nats()
    mongo = start_mongo()
    worker = start_worker(1, nats_server.url, mongo.url)
    keycloak = None
    rows: list[dict[str, Any]] = []
    try:
        await wait_ready(nats_server.url, 1)
        nc = await nats.connect(nats_server.url)
        await AdminClient(nc, actor="bench", timeout=60).call(TENANT, "apply", file=FILE)
        await nc.close()
        # Keycloak's own JVM options (both JIT tiers), not the tests' quick start
        keycloak = await asyncio.to_thread(
            start_keycloak, {"nats-url": nats_server.url}, 240.0, "-Xms512m -Xmx1g"
        )
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.in_flight))
        admin = KeycloakAdmin(keycloak.url, session)
        for (name, (step, mapper), _), (suffix, policy) in product(REALMS, HASHES):
            name += suffix
            await configure_realm(
                admin, name, "http://127.0.0.1:1/cb", step=step, mapper=mapper, tenant=TENANT
            )
            if policy:
                rep = await admin.call("GET", f"/{name}")
                rep["passwordPolicy"] = policy
                await admin.call("PUT", f"/{name}", rep)
            user = {
                "username": "ann",
                "email": "ann@acme.com",
                "firstName": "Ann",
                "lastName": "Smith",
                "enabled": True,
                "emailVerified": True,
                "credentials": [{"type": "password", "value": PASSWORD, "temporary": False}],
            }
            await admin.call("POST", f"/{name}/users", user)

        def login(realm: str, mapper: bool) -> Callable[[], Awaitable[None]]:
            url = f"{keycloak.url}/realms/{realm}/protocol/openid-connect/token"  # type: ignore[union-attr]
            form = {
                "grant_type": "password",
                "client_id": "app",
                "client_secret": CLIENT_SECRET,
                "username": "ann",
                "password": PASSWORD,
                "scope": "openid",
            }

            async def call() -> None:
                async with session.post(url, data=form) as r:
                    body = await r.json()
                    assert r.status == 200, body
                    payload = body["access_token"].split(".")[1]
                    # the claims show gatehook's actions ran (and, without them, did not)
                    claims = _b64(payload)
                    assert (b"engineering" in claims and b"gold" in claims) is mapper, realm

            return call

        pids = (keycloak.proc.pid, worker.pid, nats_server.proc.pid if nats_server.proc else 0)
        for _, (suffix, _) in product(range(args.rounds), HASHES):
            for name, (_, mapper), label in REALMS:
                call = login(name + suffix, mapper)
                await closed_loop(call, args.warm, args.in_flight)  # Keycloak's JIT, caches
                before = _cpu(*pids)
                done, lat = await closed_loop(call, args.seconds, args.in_flight)
                after = _cpu(*pids)
                rows.append(
                    {
                        "realm": label,
                        "hash": suffix,
                        "rps": done / args.seconds,
                        "p50": pct(lat, 50),
                        "p99": pct(lat, 99),
                        "cpu": {k: (after[k] - before.get(k, 0.0)) / done * 1e3 for k in after},
                    }
                )
                print(f"{label}: {done / args.seconds:.1f} logins/s", flush=True)
        await session.close()
    finally:
        if keycloak is not None:
            keycloak.stop()
        stop(worker)
        mongo.stop()
        nats_server.stop()
    return report(rows, args)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    kinds = ("Keycloak", "worker", "sandbox", "nats-server")
    lines = [
        f"### Keycloak direct grant ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, {args.in_flight} in flight, {args.seconds:.0f} s per realm, "
        f"{args.rounds} round(s))",
        "",
        "| realm | password hashing | logins/s | p50 ms | p99 ms | "
        + " | ".join(f"CPU ms/login {k}" for k in kinds)
        + " |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |",
    ]
    for r in rows:
        lines.append(
            f"| {r['realm']} | {HASH_NAMES[r['hash']]} | {r['rps']:.1f} | "
            f"{r['p50']:.1f} | {r['p99']:.1f} | "
            + " | ".join(f"{r['cpu'].get(k, 0.0):.2f}" for k in kinds)
            + " |"
        )
    lines.append("")
    for (_, _, label), (suffix, _) in product(REALMS[1:], HASHES):
        plain = [r for r in rows if r["realm"] == REALMS[0][2] and r["hash"] == suffix]
        mine = [r for r in rows if r["realm"] == label and r["hash"] == suffix]
        for base, r in zip(plain, mine, strict=True):
            kc = r["cpu"].get("Keycloak", 0.0) - base["cpu"].get("Keycloak", 0.0)
            lines.append(
                f"- {label}, {HASH_NAMES[suffix]}: p50 {r['p50'] - base['p50']:+.1f} ms "
                f"({r['p50'] / base['p50']:.2f}x), logins/s {r['rps'] / base['rps']:.2f}x, "
                f"Keycloak CPU per login {kc:+.2f} ms."
            )
    text = "\n".join(lines) + "\n"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"keycloak-{time.strftime('%Y%m%d-%H%M%S')}.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="each realm, alternating")
    args = parser.parse_args()
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
