"""The in-process worker the tests reach over NATS, as a login service reaches one, and the
session's servers."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker

from gatehook.devservers import Server
from gatehook.runtime import Runtime, build_broker
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.transport.lean import settle

__all__ = ["TEST_SECRETS_KEY", "Servers", "Worker", "start_worker", "stop_worker"]


# Tenants' secrets are sealed in every test's database (tests/e2e/test_secrets.py reads them raw)
@dataclass
class Servers:
    """The session's servers and the versions they reported."""

    nats: Server
    mongo: Server
    nats_version: str
    mongo_version: str


@dataclass
class Worker:
    """An in-process worker reached over NATS, like a login service reaches one."""

    runtime: Runtime
    broker: NatsBroker


async def stop_worker(runtime: Runtime, broker: NatsBroker) -> None:
    """Stop taking requests, finish those in flight, close."""
    await runtime.drain()
    await broker.stop()
    await runtime.aclose()


async def start_worker(settings: Settings, pool: SandboxPool) -> tuple[Runtime, NatsBroker]:
    """Start a worker and wait until the server has its subscriptions (flush)."""
    broker, runtime = build_broker(settings, pool=pool)
    await runtime.start()
    await broker.start()
    await runtime.serve()
    await settle(broker.connection)
    return runtime, broker


TEST_SECRETS_KEY = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0="
