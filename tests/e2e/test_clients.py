"""The clients for login services not written in Python get real decisions from a real
worker: the Go client's tests (`go test` in clients/go) and the TypeScript client's (node's
test runner in clients/ts) run against the worker started here."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gatehook.admin.service import AdminService
from gatehook.settings import Settings
from tests.support.tenants import attach, custom
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
GATE = """export async function execute(input) {
  if (input.user.email && input.user.email.endsWith('@evil.example')) {
    return {kind: 'block', reason: 'domain'};
  }
  return {kind: 'continue', claims: {via: 'go'}};
}"""


async def test_go_client_against_a_real_worker(
    worker: Worker, settings: Settings, admin: AdminService, tenant: str
) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.fail("the Go client's tests need Go on PATH (the machine's toolchain)")
    v = await custom(admin, tenant, "gate", GATE)
    await attach(admin, tenant, [("gate", v)])
    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url, "GATEHOOK_TEST_TENANT": tenant}
    out = await asyncio.to_thread(
        subprocess.run,
        [go, "test", "-count=1", "-v", "./..."],
        cwd=ROOT / "clients" / "go",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    for name in (
        "TestDecisions",
        "TestBadRequestIsNotRetried",
        "TestRetryKeepsTheRequestID",
        "TestDeadline",
    ):
        assert f"--- PASS: {name}" in out.stdout


async def test_typescript_client_against_a_real_worker(
    worker: Worker, settings: Settings, admin: AdminService, tenant: str
) -> None:
    npm = shutil.which("npm")
    ts = ROOT / "clients" / "ts"
    if npm is None or not (ts / "node_modules").is_dir():
        pytest.fail(
            "the TypeScript client's tests need Node 20 and `npm ci` in clients/ts "
            "(scripts/bootstrap runs it)"
        )
    v = await custom(admin, tenant, "gate", GATE.replace("'go'", "'ts'"))
    await attach(admin, tenant, [("gate", v)])
    env = {**os.environ, "GATEHOOK_NATS_URL": settings.nats_url, "GATEHOOK_TEST_TENANT": tenant}
    out = await asyncio.to_thread(
        subprocess.run, [npm, "test"], cwd=ts, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "# pass 2" in out.stdout
    assert "# fail 0" in out.stdout
