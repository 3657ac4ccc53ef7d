"""`gatehook worker --processes N`: N workers in the queue group under one parent that
replaces a worker that dies and drains them all on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from gatehook.admin.service import AdminService
from gatehook.client import GatehookClient
from gatehook.settings import Settings
from tests.support.tenants import attach, custom, request, trigger

PA = ("external_authentication", "post_authentication")

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


async def _workers(nc: NATS, want: int, timeout: float = 60.0) -> set[str]:
    """The workers (by name) answering the micro service's PING, once ``want`` do."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING.gatehook", b"", reply=inbox)
        seen = set()
        try:
            while True:
                msg = await sub.next_msg(timeout=0.3)
                seen.add(json.loads(msg.data)["metadata"]["worker"])
        except Exception:  # no more answers within the window
            pass
        await sub.unsubscribe()
        if len(seen) >= want:
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {sorted(seen)} answered, wanted {want}")


async def test_processes_serve_restart_and_drain(
    settings: Settings, nc: NATS, admin: AdminService, tenant: str
) -> None:
    env = {
        **os.environ,
        "GATEHOOK_NATS_URL": settings.nats_url,
        "GATEHOOK_MONGODB_URL": settings.mongodb_url,
        "GATEHOOK_MONGODB_DATABASE": settings.mongodb_database,
        "GATEHOOK_WORKER_NAME": "multi",
        "GATEHOOK_SANDBOX__POOL_SIZE": "1",
    }
    parent = subprocess.Popen(  # noqa: ASYNC220 - a long-lived server, waited on in a thread
        [sys.executable, "-m", "gatehook", "worker", "--processes", "2", "--log-level", "WARNING"],
        env=env,
        cwd=ROOT,
    )
    try:
        assert await _workers(nc, 2) == {"multi-0", "multi-1"}
        v = await custom(
            admin,
            tenant,
            "gate",
            "export async function execute(input) { return {kind: 'continue', claims: {ok: 1}}; }",
        )
        await attach(admin, tenant, [("gate", v)])
        replies = await asyncio.gather(*(trigger(nc, tenant, request()) for _ in range(40)))
        assert all(r["decision"] == "continue" and r["claims"] == {"ok": 1} for r in replies)

        # A worker that dies is replaced; the other serves meanwhile.
        workers = _children(parent.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        # A request sent at the moment of the kill may reach the dead worker before the
        # server has dropped it: a login service retries with the same request_id, as
        # GatehookClient does, and the other worker answers.
        client = GatehookClient(nc, timeout=2.0)
        reply = await client.trigger(tenant, *PA, request())
        assert reply.decision == "continue"
        assert await _workers(nc, 2) == {"multi-0", "multi-1"}
        assert set(_children(parent.pid)) - set(workers)  # a new process

        # SIGTERM: every worker drains and the parent exits cleanly.
        in_flight = [asyncio.create_task(trigger(nc, tenant, request())) for _ in range(20)]
        await asyncio.sleep(0.05)
        parent.send_signal(signal.SIGTERM)
        answered = await asyncio.gather(*in_flight)
        assert all(r["decision"] == "continue" for r in answered)
        assert await asyncio.to_thread(parent.wait, 60) == 0
        assert _children(parent.pid) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


async def test_processes_option_is_checked() -> None:
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatehook", "worker", "--processes", "zero"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "--processes takes a number or 'auto'" in out.stderr


async def test_a_worker_takes_a_list_of_servers(
    settings: Settings, pool: Any, nc: NATS, admin: AdminService, tenant: str
) -> None:
    from tests.support.workers import start_worker, stop_worker

    listed = settings.model_copy(update={"nats_url": f"{settings.nats_url}, {settings.nats_url}"})
    runtime, broker = await start_worker(listed, pool)
    try:
        v = await custom(admin, tenant, "gate", "export async function execute(i) { return {}; }")
        await attach(admin, tenant, [("gate", v)])
        assert (await trigger(nc, tenant, request()))["decision"] == "continue"
    finally:
        await stop_worker(runtime, broker)
