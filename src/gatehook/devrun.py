"""``gatehook dev``: the local run. Servers (unless given), a worker process, the sample
tenant applied through the management API, and real decisions printed, as a login service
would get them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from rich.console import Console

from gatehook.admin.apply import load_file
from gatehook.admin.client import AdminClient
from gatehook.console.server import console_server, console_token
from gatehook.devservers import Server, start_mongo, start_nats
from gatehook.errors import GatehookError
from gatehook.settings import Settings

__all__ = ["run_dev"]

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "ann@acme.com signs in through Okta",
        {
            "user": {"id": "u1", "username": "ann", "email": "ann@acme.com", "groups": ["staff"]},
            "request": {"ip": "203.0.113.7", "risk_score": 0.1},
            "context": {"providerInfo": {"name": "okta"}},
        },
    ),
    (
        "eve@evil.example signs in",
        {
            "user": {"id": "u2", "username": "eve", "email": "eve@evil.example"},
            "request": {"ip": "198.51.100.4", "risk_score": 0.1},
        },
    ),
    (
        "ann again, from a risky network",
        {
            "user": {"id": "u1", "username": "ann", "email": "ann@acme.com"},
            "request": {"ip": "192.0.2.9", "risk_score": 0.93},
        },
    ),
]


def _show(console: Console, title: str, reply: dict[str, Any]) -> None:
    reason = f" ({reply['reason']})" if reply.get("reason") else ""
    console.print(f"\n[bold]{title}[/bold] -> [cyan]{reply['decision']}[/cyan]{reason}")
    if reply.get("error"):
        console.print(f"  error: {reply['error']}")
    if reply.get("claims"):
        console.print(f"  claims: {json.dumps(reply['claims'])}", markup=False)
    if reply.get("metadata"):
        console.print(f"  metadata: {json.dumps(reply['metadata'])}", markup=False)
    for a in reply.get("actions", []):
        err = f"  {a['error']}" if a.get("error") else ""
        ref = f"{a['name']}@{a['version']}"
        line = f"  {ref:<24} {a['outcome']:<10} {a['duration_ms']:>7.2f} ms{err}"
        console.print(line, markup=False)
    console.print(f"  flow revision {reply.get('flow_revision')}")


async def _wait_for_worker(nc: NATS, tenant: str, deadline: float) -> None:
    client = AdminClient(nc, timeout=2)
    while True:
        try:
            await client.call(tenant, "templates.list")
            return
        except GatehookError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def run_dev(settings: Settings, file: Path, *, once: bool, console: Console) -> int:
    """Start what is missing, apply ``file``, show decisions; wait for Ctrl-C unless ``once``."""
    started: list[Server] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    nats_url, mongo_url = settings.nats_url, settings.mongodb_url
    worker: asyncio.subprocess.Process | None = None
    try:
        if "nats_url" not in settings.model_fields_set:
            server = start_nats()
            started.append(server)
            nats_url = server.url
            console.print(f"started nats-server (JetStream) at {nats_url}")
        if "mongodb_url" not in settings.model_fields_set:
            server = start_mongo(settings.test_mongodb_url)
            started.append(server)
            mongo_url = server.url
            console.print(f"started {server.name} at {mongo_url}")
        env.update(
            GATEHOOK_NATS_URL=nats_url,
            GATEHOOK_MONGODB_URL=mongo_url,
            GATEHOOK_WORKER_NAME="dev-worker",
        )
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatehook", "worker", "--log-level", "WARNING", env=env
        )
        nc = await nats.connect(nats_url)
        try:
            doc, sources = load_file(file)
            tenant = doc.tenant or "acme"
            await _wait_for_worker(nc, tenant, time.monotonic() + 60)
            console.print(f"worker {worker.pid} is serving; applying {file} to tenant {tenant}")
            plan = await AdminClient(nc, actor="dev").call(
                tenant, "apply", file=doc.model_dump(mode="json"), sources=sources
            )
            for line in plan["changes"] or ["(already up to date)"]:
                console.print(f"  - {line}", markup=False)
            for title, body in SAMPLES:
                body = {"request_id": uuid.uuid4().hex, **body}
                msg = await nc.request(
                    f"gatehook.v1.trigger.{tenant}.external_authentication.post_authentication",
                    json.dumps(body).encode(),
                    timeout=10,
                )
                reply = json.loads(msg.data)
                _show(console, title, reply)
        finally:
            await nc.drain()
        if once:
            return 0
        host, port = settings.console.host, settings.console.port
        dev_settings = settings.model_copy(
            update={
                "nats_url": nats_url,
                "console": settings.console.model_copy(update={"tenants": [tenant]}),
            }
        )
        token, _ = console_token(dev_settings, host)
        web = console_server(dev_settings, token, host, port)
        web_task = asyncio.create_task(web.serve())
        console.print(f"\nThe console: http://{host}:{port}/  (any name; operator token {token})")
        console.print(
            "\nThe worker keeps running. Try, in another shell:\n"
            f"  export GATEHOOK_NATS_URL={nats_url}\n"
            f"  .venv/bin/gatehook trigger {tenant} external_authentication post_authentication\n"
            f"  .venv/bin/gatehook actions list -t {tenant}\n"
            f"  .venv/bin/gatehook flows show -t {tenant} -f external_authentication\n"
            "Ctrl-C stops the worker and the servers."
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        web.should_exit = True
        await web_task
        return 0
    except GatehookError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        return 1
    finally:
        if worker is not None and worker.returncode is None:
            worker.terminate()
            try:
                await asyncio.wait_for(worker.wait(), 15)
            except TimeoutError:
                worker.kill()
        for server in reversed(started):
            server.stop()
