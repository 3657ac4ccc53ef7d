"""A stack under deploy/nats.conf's roles for the tests that act as its users: nats-server
with the roles, a worker as ``gatehook-worker``, and the ``gatehook`` command run as a role's
user, in a process of its own, as that user would run it."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from gatehook.devservers import Server, start_nats
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from tests.support.workers import start_worker, stop_worker

__all__ = ["GATEHOOK", "PASSWORDS", "ROOT", "Done", "gatehook", "role_stack", "run", "url"]

ROOT = Path(__file__).resolve().parents[2]
GATEHOOK = str(Path(sys.executable).with_name("gatehook"))
PASSWORDS = {  # deploy/nats-roles.conf's sample users
    "acme-audit": "audit-secret",
    "acme-operator": "operator-secret",
    "acme-login": "login-secret",
    "globex-login": "globex-login-secret",
    "globex-operator": "globex-operator-secret",
}


def url(server: Server, user: str) -> str:
    """``user``'s NATS URL on ``server`` (a user not in the roles gets a wrong password)."""
    return f"nats://{user}:{PASSWORDS.get(user, 'x')}@127.0.0.1:{server.port}"


@dataclass(frozen=True)
class Done:
    """What a command printed, and its exit code."""

    returncode: int
    stdout: str
    stderr: str


async def run(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> Done:
    """A command in a process of its own, with this environment less any ``GATEHOOK_*`` and
    plus ``env`` (the worker it talks to may run on this test's event loop, which must keep
    running)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_")}
    full.update(env or {})
    proc = await asyncio.create_subprocess_exec(*args, env=full, cwd=cwd, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


async def gatehook(server: Server, user: str, *args: str) -> Done:
    """The ``gatehook`` command as ``user`` of deploy/nats-roles.conf."""
    return await run(GATEHOOK, *args, env={"GATEHOOK_NATS_URL": url(server, user)})


@asynccontextmanager
async def role_stack(settings: Settings, pool: SandboxPool) -> AsyncIterator[Server]:
    """NATS under deploy/nats.conf and a worker as gatehook-worker; no tenant set up."""
    server = start_nats(config=str(ROOT / "deploy" / "nats.conf"))
    worker_settings = settings.model_copy(
        update={"nats_url": f"nats://gatehook-worker:worker-secret@127.0.0.1:{server.port}"}
    )
    try:
        runtime, broker = await start_worker(worker_settings, pool)
        try:
            yield server
        finally:
            await stop_worker(runtime, broker)
    finally:
        server.stop()
