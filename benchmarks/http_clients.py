"""Which async HTTP client calls target endpoints: httpx against aiohttp, one run.

    .venv/bin/python benchmarks/http_clients.py [--requests 4000] [--concurrency 16]

A local keep-alive HTTP server (aiohttp's, in a separate process) answers a signed POST with a
small JSON body, as a target does. Each client makes the same number of calls with the same
concurrency through one pooled client; the table gives calls/s, p50/p99 latency and the
client process's CPU µs per call (from resource.getrusage). Bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import time
from typing import Any

import uvloop

from gatehook.devservers import free_port

BODY = json.dumps({"function": "function/preaccesstoken", "user": {"id": "u1"}}).encode()
REPLY = b'{"append_claims":[{"key":"group","value":"ADMIN"}]}'


def serve(port: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handle)
    uvloop.run(web._run_app(app, host="127.0.0.1", port=port, print=None))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(name: str, url: str, n: int, concurrency: int) -> dict[str, Any]:
    lat: list[float] = []
    if name == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client: Any = httpx.AsyncClient(limits=limits, timeout=5.0)

        async def call() -> None:
            r = await client.post(url, content=BODY, headers={"Content-Type": "application/json"})
            r.raise_for_status()
            r.read()

        close = client.aclose
    else:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(5))

        async def call() -> None:
            async with session.post(
                url, data=BODY, headers={"Content-Type": "application/json"}
            ) as r:
                r.raise_for_status()
                await r.read()

        close = session.close
    for _ in range(50):  # warm the pool
        await call()
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t = time.perf_counter()
            await call()
            lat.append((time.perf_counter() - t) * 1000)

    c0, t0 = cpu(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    await close()
    lat.sort()
    return {
        "client": name,
        "calls/s": n / elapsed,
        "p50 ms": lat[len(lat) // 2],
        "p99 ms": lat[int(len(lat) * 0.99)],
        "CPU µs/call": used / n * 1e6,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/"
    rows = []
    try:
        for name in ("httpx", "aiohttp", "httpx", "aiohttp"):  # alternate: noise shows
            rows.append(uvloop.run(run(name, url, args.requests, args.concurrency)))
    finally:
        server.terminate()
    print("| client | calls/s | p50 ms | p99 ms | client CPU µs/call |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['client']} | {r['calls/s']:.0f} | {r['p50 ms']:.2f} | {r['p99 ms']:.2f} "
            f"| {r['CPU µs/call']:.0f} |"
        )


if __name__ == "__main__":
    main()
