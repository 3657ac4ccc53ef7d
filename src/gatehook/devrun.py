"""``gatehook dev``: the local run. Servers (unless given), a worker process, the sample
tenant applied through the management API, and real decisions printed, as a login service
would get them.

The NATS server it starts runs deploy/nats.conf, the production roles with their example
passwords: the worker, the console, the sample tenant's operator and login service each
connect as their own user, so what a developer sees locally is what those permissions
enforce (a login service reads only its replies, an operator changes only its tenant)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client as NATS
from rich.console import Console

from gatehook.admin.apply import load_file
from gatehook.admin.client import AdminClient
from gatehook.console.server import console_server, console_token
from gatehook.devservers import Server, start_mongo, start_nats
from gatehook.domain import subjects
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


NATS_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats.conf"
ROLES_FILE = NATS_CONF.with_name("nats-roles.conf")


def role_passwords(path: Path = ROLES_FILE) -> dict[str, str]:
    """The users and (example) passwords of deploy/nats-roles.conf (empty when it is not
    there: an installed package without the repository's deploy/)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(re.findall(r"user:\s*(\S+)\s+password:\s*(\S+)", text))


def _as(url: str, user: str, roles: dict[str, str]) -> str:
    """``url`` with ``user``'s credentials (as is when the roles are not in force)."""
    if user not in roles:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{roles[user]}@{parts.hostname}:{parts.port}"))


async def _wait_for_worker(nc: NATS, tenant: str, deadline: float, principal: str | None) -> None:
    client = AdminClient(nc, timeout=2, principal=principal)
    while True:
        try:
            await client.call(tenant, "templates.list")
            return
        except GatehookError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _inbox(user: str | None) -> str:
    return f"_INBOX.{user}" if user else "_INBOX"


async def run_dev(settings: Settings, file: Path, *, once: bool, console: Console) -> int:
    """Start what is missing, apply ``file``, show decisions; wait for Ctrl-C unless ``once``."""
    started: list[Server] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    nats_url, mongo_url = settings.nats_url, settings.mongodb_url
    worker: asyncio.subprocess.Process | None = None
    roles: dict[str, str] = {}
    try:
        if "nats_url" not in settings.model_fields_set:
            roles = role_passwords()
            server = start_nats(config=str(NATS_CONF) if roles else None)
            started.append(server)
            nats_url = server.url
            said = f" with the roles of {ROLES_FILE.name}" if roles else ""
            console.print(f"started nats-server (JetStream) at {nats_url}{said}", soft_wrap=True)
        if "mongodb_url" not in settings.model_fields_set:
            server = start_mongo(settings.test_mongodb_url)
            started.append(server)
            mongo_url = server.url
            console.print(f"started {server.name} at {mongo_url}")
        env.update(
            GATEHOOK_NATS_URL=_as(nats_url, "gatehook-worker", roles),
            GATEHOOK_MONGODB_URL=mongo_url,
            GATEHOOK_WORKER_NAME="dev-worker",
        )
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatehook", "worker", "--log-level", "WARNING", env=env
        )
        doc, sources = load_file(file)
        tenant = doc.tenant or "acme"
        operator = f"{tenant}-operator" if f"{tenant}-operator" in roles else None
        login = f"{tenant}-login" if f"{tenant}-login" in roles else None
        if roles and (operator is None or login is None):
            raise GatehookError(
                f"{ROLES_FILE} has no {tenant}-operator and {tenant}-login users: add them"
                f" (as acme's are) to run tenant {tenant} locally"
            )
        admin_nc = await nats.connect(
            _as(nats_url, operator or "", roles), inbox_prefix=_inbox(operator)
        )
        login_nc = await nats.connect(_as(nats_url, login or "", roles), inbox_prefix=_inbox(login))
        try:
            await _wait_for_worker(admin_nc, tenant, time.monotonic() + 60, operator)
            console.print(f"worker {worker.pid} is serving; applying {file} to tenant {tenant}")
            plan = await AdminClient(admin_nc, actor="dev", principal=operator).call(
                tenant, "apply", file=doc.model_dump(mode="json"), sources=sources
            )
            for line in plan["changes"] or ["(already up to date)"]:
                console.print(f"  - {line}", markup=False)
            for title, body in SAMPLES:
                body = {"request_id": uuid.uuid4().hex, **body}
                msg = await login_nc.request(
                    subjects.trigger(tenant, "external_authentication", "post_authentication"),
                    json.dumps(body).encode(),
                    timeout=10,
                )
                reply = json.loads(msg.data)
                _show(console, title, reply)
        finally:
            await admin_nc.drain()
            await login_nc.drain()
        if once:
            return 0
        host, port = settings.console.host, settings.console.port
        dev_settings = settings.model_copy(
            update={
                "nats_url": _as(nats_url, "gatehook-console", roles),
                "console": settings.console.model_copy(update={"tenants": [tenant]}),
            }
        )
        token, _ = console_token(dev_settings, host)
        web = console_server(dev_settings, token, host, port)
        web_task = asyncio.create_task(web.serve())
        # the token on a line of its own, never wrapped: it is copied whole
        console.print(f"\nThe console: http://{host}:{port}/  (any name; the operator token:)")
        console.print(token, soft_wrap=True, markup=False, highlight=False)
        console.print(
            "\nThe worker keeps running. Try, in another shell (as the tenant's login service,"
            " then as its operator):\n"
            f"  GATEHOOK_NATS_URL={_as(nats_url, login or '', roles)} \\\n"
            f"    .venv/bin/gatehook trigger {tenant} external_authentication post_authentication\n"
            f"  export GATEHOOK_NATS_URL={_as(nats_url, operator or '', roles)}\n"
            f"  .venv/bin/gatehook actions list -t {tenant}\n"
            f"  .venv/bin/gatehook flows show -t {tenant} -f external_authentication\n"
            "Ctrl-C stops the worker and the servers.",
            markup=False,
            soft_wrap=True,
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
