"""Process-level concerns of a worker: the event loop it runs on, and the supervisor that
serves one machine's cores with several worker processes (``gatehook worker --processes``)."""

from gatehook.process.loop import run_worker
from gatehook.process.supervisor import Supervisor, resolve_processes

__all__ = ["Supervisor", "resolve_processes", "run_worker"]
