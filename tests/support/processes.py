"""gatehook as processes: the CLI run as an operator runs it, workers as production runs
them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from gatehook.settings import Settings

__all__ = ["cli", "services_ready", "spawn_worker"]

ROOT = Path(__file__).resolve().parents[2]


async def cli(
    settings: Settings, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``gatehook *args`` against the test's NATS; its exit code checked unless ``check``."""
    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url, "COLUMNS": "200"}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatehook", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    if check:
        assert out.returncode == 0, out.stderr + out.stdout
    return out


def spawn_worker(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """A worker process, as `gatehook worker` runs in production."""
    return subprocess.Popen(
        [sys.executable, "-m", "gatehook", "worker", "--log-level", "WARNING"],
        env={**env, "GATEHOOK_WORKER_NAME": name},
    )


async def services_ready(nc: NATS, workers: int, deadline: float) -> None:
    """Wait until ``workers`` workers answer the NATS micro service ping."""
    seen: set[str] = set()
    while len(seen) < workers:
        assert time.monotonic() < deadline, "workers did not start"
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING.gatehook", b"", reply=inbox)
        try:
            while True:
                msg = await sub.next_msg(timeout=0.3)
                seen.add(json.loads(msg.data)["id"])
        except Exception:
            pass
        finally:
            await sub.unsubscribe()
