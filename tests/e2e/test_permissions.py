"""deploy/nats.conf: subject permissions keep a login service to its triggers and an operator
to its tenant's management API, with a real worker behind them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import yaml
from nats.aio.client import Client as NATS

from gatehook.devservers import Server, find_binary, start_nats
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from tests.conftest import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def secured() -> AsyncIterator[Server]:
    server = start_nats(config=str(ROOT / "deploy" / "nats.conf"))
    yield server
    server.stop()


def _url(server: Server, user: str, password: str) -> str:
    return f"nats://{user}:{password}@127.0.0.1:{server.port}"


async def _client(server: Server, user: str, password: str, errors: list[str]) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(_url(server, user, password), error_cb=on_error)


async def test_roles(
    secured: Server, settings: Settings, pool: SandboxPool, store: MongoStore
) -> None:
    settings = settings.model_copy(
        update={"nats_url": _url(secured, "gatehook-worker", "worker-secret")}
    )
    runtime, broker = await start_worker(settings, pool)
    errors: list[str] = []
    login = await _client(secured, "acme-login", "login-secret", errors)
    operator = await _client(secured, "acme-operator", "operator-secret", errors)
    try:
        body = json.dumps({"request_id": "r1"}).encode()
        ok = await login.request(
            "gatehook.v1.trigger.acme.external_authentication.post_authentication", body, timeout=5
        )
        assert json.loads(ok.data)["decision"] == "continue"

        for subject in (
            "gatehook.v1.trigger.other.external_authentication.post_authentication",
            "gatehook.v1.admin.acme.actions.list",
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await login.request(subject, body, timeout=0.5)
        await asyncio.sleep(0)
        assert sum("permissions violation" in e.lower() for e in errors) >= 2, errors

        listed = await operator.request("gatehook.v1.admin.acme.actions.list", b"{}", timeout=5)
        assert json.loads(listed.data) == {"ok": True, "result": []}
        before = len(errors)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request("gatehook.v1.admin.other.actions.list", b"{}", timeout=0.5)
        with pytest.raises(nats.errors.TimeoutError):
            await operator.request(
                "gatehook.v1.trigger.acme.external_authentication.post_authentication",
                body,
                timeout=0.5,
            )
        assert len(errors) >= before + 2
    finally:
        await login.close()
        await operator.close()
        await stop_worker(runtime, broker)


def test_compose_file_is_consistent() -> None:
    """Docker cannot run here; check what compose.yaml promises against the repository."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"nats", "mongo", "worker"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert all("healthcheck" in s for s in services.values())
    assert "alpine" in services["nats"]["image"]  # has wget, which its health check runs
    check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f":{services['worker']['environment']['GATEHOOK_METRICS__PORT']}/healthz" in check
    assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in services["nats"]["volumes"]
    env = services["worker"]["environment"]
    assert env["GATEHOOK_NATS_URL"].startswith("nats://gatehook-worker:worker-secret@nats:")
    assert (ROOT / services["worker"]["build"] / "Dockerfile").exists()
    assert set(compose["volumes"]) == {"nats-data", "mongo-data"}


def test_cluster_compose_and_config_are_consistent() -> None:
    """compose.cluster.yaml against the repository and the settings; the cluster config as
    nats-server itself checks it (`-t`)."""
    compose = yaml.safe_load((ROOT / "compose.cluster.yaml").read_text())
    services = compose["services"]
    assert {"nats-1", "nats-2", "nats-3", "mongo", "worker"} == set(services)
    env = services["worker"]["environment"]
    urls = env["GATEHOOK_NATS_URL"].split(",")
    assert [u.rsplit("@", 1)[1] for u in urls] == ["nats-1:4222", "nats-2:4222", "nats-3:4222"]
    s = Settings(
        nats_url=env["GATEHOOK_NATS_URL"], audit={"replicas": env["GATEHOOK_AUDIT__REPLICAS"]}
    )
    assert len(s.nats_servers) == 3
    assert s.audit.replicas == 3
    assert "/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    assert env["GATEHOOK_METRICS__PORT"] in " ".join(services["worker"]["healthcheck"]["test"])
    for name in ("nats-1", "nats-2", "nats-3"):
        assert services[name]["environment"]["NATS_SERVER_NAME"] == name
        assert "./deploy/nats-cluster.conf:/etc/nats/nats.conf:ro" in services[name]["volumes"]
        assert "alpine" in services[name]["image"]  # has wget for the health check
    binary = find_binary("nats-server")
    assert binary is not None
    checked = subprocess.run(
        [binary, "-t", "-c", str(ROOT / "deploy" / "nats-cluster.conf")],
        capture_output=True,
        text=True,
        env={"NATS_SERVER_NAME": "nats-1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert checked.returncode == 0, checked.stderr + checked.stdout
