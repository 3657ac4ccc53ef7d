"""``gatehook worker --processes N``: one parent serving a machine's cores with N workers.

Each worker process is a whole worker (its own NATS connection in the queue group, its own
sandbox pool, caches and metrics port), so NATS spreads requests over them as over workers on
different machines. The parent only starts, watches and stops them:

- a worker that exits unexpectedly is started again, after a back-off that doubles from 0.5 s
  to 30 s while it keeps failing within a minute of its start;
- SIGTERM or SIGINT is passed to every worker, which stops taking requests and finishes those
  in flight (FastStream's graceful shutdown); the parent waits up to ``drain_s`` and kills
  what is still running after that;
- ``GATEHOOK_WORKER_NAME`` becomes ``<name>-<i>``, and ``GATEHOOK_METRICS__PORT=P`` becomes
  ``P + i`` for worker ``i`` (0-based), so each process serves its own /metrics and /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

__all__ = ["Supervisor", "resolve_processes"]

log = logging.getLogger("gatehook.supervisor")


def resolve_processes(value: str) -> int:
    """``auto`` (one per CPU this process may use) or a whole number from 1 to 256."""
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--processes takes a number or 'auto', not {value!r}") from None
    if not 1 <= n <= 256:
        raise ValueError(f"--processes must be between 1 and 256, not {n}")
    return n


class Supervisor:
    """Starts ``processes`` copies of ``command``, restarts the ones that die, drains on stop."""

    def __init__(
        self,
        processes: int,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        name: str,
        metrics_port: int | None = None,
        drain_s: float = 30.0,
    ) -> None:
        self._n = processes
        self._command = list(command)
        self._env = dict(env)
        self._name = name
        self._metrics_port = metrics_port
        self._drain_s = drain_s
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self.restarts = 0

    def env_for(self, index: int) -> dict[str, str]:
        """The environment of worker ``index``: its own name and metrics port."""
        env = {**self._env, "GATEHOOK_WORKER_NAME": f"{self._name}-{index}"}
        if self._metrics_port is not None:
            env["GATEHOOK_METRICS__PORT"] = str(
                self._metrics_port + index if self._metrics_port else 0
            )
        return env

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 when every worker drained in time, else 1."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        keepers = [asyncio.create_task(self._keep(i)) for i in range(self._n)]
        log.info("supervising %d worker processes", self._n)
        await self._stopping.wait()
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        _, late = await asyncio.wait(keepers, timeout=self._drain_s)
        for index, proc in self._procs.items():
            if proc.returncode is None:
                log.warning(
                    "worker %d did not drain within %.0f s; killing it", index, self._drain_s
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        if late:
            await asyncio.wait(late, timeout=5)
        clean = not late and all(p.returncode == 0 for p in self._procs.values())
        return 0 if clean else 1

    async def _keep(self, index: int) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*self._command, env=self.env_for(index))
            self._procs[index] = proc
            code = await proc.wait()
            if self._stopping.is_set():
                return
            self.restarts += 1
            backoff = 0.5 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
            log.warning(
                "worker %d (pid %d) exited with %s; starting it again in %.1f s",
                index,
                proc.pid,
                code,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)


def worker_command(log_level: str) -> list[str]:
    """The command line of one worker process (the same interpreter and package)."""
    return [
        sys.executable,
        "-m",
        "gatehook",
        "worker",
        "--processes",
        "1",
        "--log-level",
        log_level,
    ]
