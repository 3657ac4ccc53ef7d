"""compose.yaml and compose.cluster.yaml: validated by `docker-compose config` (Debian's
docker-compose, installed by scripts/install-debian-packages; it needs no Docker daemon), and
what they promise checked against the repository, the settings and deploy/nats.conf."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gatehook.devservers import find_binary
from gatehook.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef-token"
SECRETS = {
    "GATEHOOK_CONSOLE_TOKEN": TOKEN,
    "GATEHOOK_MONGO_PASSWORD": "mongo-password-1",
    "GATEHOOK_SECRETS_KEY": "qmYF1h8nHq1cM4QmvkVw7pD8m0X8GcRb1G5Q3nAqW1E=",
}


KEYCLOAK_SECRETS = {"KEYCLOAK_ADMIN_PASSWORD": "admin-password-1", "KEYCLOAK_DB_PASSWORD": "db-1"}


def compose_config(*paths: Path, **env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: run scripts/install-debian-packages"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS | KEYCLOAK_SECRETS}
    files = [arg for path in paths for arg in ("-f", str(path))]
    return subprocess.run(
        [binary, *files, "config"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=ROOT,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_compose_config_validates(name: str) -> None:
    done = compose_config(ROOT / name, **SECRETS)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    if name == "compose.yaml":
        services = resolved["services"]
        assert services["console"]["environment"]["GATEHOOK_CONSOLE__TOKEN"] == TOKEN
        worker = services["worker"]["environment"]
        assert worker["GATEHOOK_SECRETS__KEY"] == SECRETS["GATEHOOK_SECRETS_KEY"]
        password = SECRETS["GATEHOOK_MONGO_PASSWORD"]
        assert worker["GATEHOOK_MONGODB_URL"].startswith(f"mongodb://gatehook:{password}@mongo:")
        assert services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == password


def test_compose_config_can_fail() -> None:
    """The validator really checks: a misspelt key is refused, and so is a missing token."""
    bad = (ROOT / "compose.yaml").read_text().replace("interval: 5s", "intervall: 5s", 1)
    broken = ROOT / "build" / "compose-broken.yaml"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text(bad)
    try:
        done = compose_config(broken, **SECRETS)
        assert done.returncode != 0
        assert "intervall" in done.stderr
    finally:
        broken.unlink()
    for missing, says in (
        ("GATEHOOK_CONSOLE_TOKEN", "set GATEHOOK_CONSOLE_TOKEN"),
        ("GATEHOOK_MONGO_PASSWORD", "set GATEHOOK_MONGO_PASSWORD"),
        ("GATEHOOK_SECRETS_KEY", "set GATEHOOK_SECRETS_KEY"),
    ):
        done = compose_config(
            ROOT / "compose.yaml", **{k: v for k, v in SECRETS.items() if k != missing}
        )
        assert done.returncode != 0, missing
        assert says in done.stderr


def _nats_users() -> dict[str, str]:
    text = (ROOT / "deploy" / "nats-roles.conf").read_text()
    return dict(re.findall(r"user:\s*(\S+)\s+password:\s*(\S+)", text))


def test_compose_file_is_consistent() -> None:
    """What compose.yaml promises against the repository, the settings and nats.conf."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"nats", "mongo", "worker", "console", "gateway"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert all("healthcheck" in s for s in services.values())
    assert "alpine" in services["nats"]["image"]  # has wget, which its health check runs
    assert "./deploy/nats.conf:/etc/nats/nats.conf:ro" in services["nats"]["volumes"]
    assert "./deploy/nats-roles.conf:/etc/nats/nats-roles.conf:ro" in services["nats"]["volumes"]
    users = _nats_users()
    for name in ("worker", "console", "gateway"):
        env = services[name]["environment"]
        settings = Settings(
            **{k.removeprefix("GATEHOOK_").lower(): v for k, v in env.items() if "__" not in k}
        )
        user, password = re.match(r"nats://([^:]+):([^@]+)@nats:4222$", settings.nats_url).groups()
        assert users[user] == password, f"{name}'s NATS user is not in deploy/nats.conf"
        assert (ROOT / services[name]["build"] / "Dockerfile").exists()
        for key in env:
            assert key.startswith("GATEHOOK_")
    worker_env = services["worker"]["environment"]
    check = " ".join(services["worker"]["healthcheck"]["test"])
    assert f":{worker_env['GATEHOOK_METRICS__PORT']}/healthz" in check
    console = services["console"]
    cenv = console["environment"]
    assert console["command"] == ["gatehook", "console"]
    assert cenv["GATEHOOK_CONSOLE__HOST"] == "0.0.0.0"  # inside the container; the host binds:
    assert console["ports"] == [f"127.0.0.1:{cenv['GATEHOOK_CONSOLE__PORT']}:8089"]
    assert int(cenv["GATEHOOK_CONSOLE__PORT"]) == Settings().console.port
    assert f":{cenv['GATEHOOK_CONSOLE__PORT']}/healthz" in " ".join(console["healthcheck"]["test"])
    assert cenv["GATEHOOK_CONSOLE__TOKEN"].startswith("${GATEHOOK_CONSOLE_TOKEN:?")
    gateway = services["gateway"]
    genv = gateway["environment"]
    assert gateway["command"] == ["gatehook", "http"]
    assert gateway["ports"] == [f"127.0.0.1:{genv['GATEHOOK_GATEWAY__PORT']}:8090"]
    assert int(genv["GATEHOOK_GATEWAY__PORT"]) == Settings().gateway.port
    assert f":{genv['GATEHOOK_GATEWAY__PORT']}/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert set(compose["volumes"]) == {"nats-data", "mongo-data"}
    # secure by default: storage and monitoring are not published, secrets are required
    assert "ports" not in services["mongo"]
    assert services["nats"]["ports"] == ["4222:4222"]
    mongo_env = services["mongo"]["environment"]
    assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"].startswith("${GATEHOOK_MONGO_PASSWORD:?")
    assert worker_env["GATEHOOK_MONGODB_URL"].startswith(
        "mongodb://gatehook:${GATEHOOK_MONGO_PASSWORD:?"
    )
    assert worker_env["GATEHOOK_SECRETS__KEY"].startswith("${GATEHOOK_SECRETS_KEY:?")


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
        volumes = services[name]["volumes"]
        assert "./deploy/nats-cluster.conf:/etc/nats/nats.conf:ro" in volumes
        assert "./deploy/nats-roles.conf:/etc/nats/nats-roles.conf:ro" in volumes
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


def test_keycloak_compose_validates_and_matches_the_extension() -> None:
    """compose.keycloak.yaml on top of compose.yaml: validated, its secrets required, its
    NATS role in deploy/nats-roles.conf, its SPI options the extension's, its image built
    from the Keycloak version the tests run. (tests/e2e/test_keycloak.py runs its SPI
    options and its health check against a real Keycloak.)"""
    files = (ROOT / "compose.yaml", ROOT / "compose.keycloak.yaml")
    done = compose_config(*files, **SECRETS, **KEYCLOAK_SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {"keycloak", "keycloak-db"} <= set(services)
    keycloak = services["keycloak"]
    assert keycloak["environment"]["KC_DB_PASSWORD"] == KEYCLOAK_SECRETS["KEYCLOAK_DB_PASSWORD"]
    assert keycloak["ports"][0].startswith("127.0.0.1:")
    assert "healthcheck" in keycloak
    assert "healthcheck" in services["keycloak-db"]
    spi = {
        key: value
        for arg in keycloak["command"]
        if arg.startswith("--spi-authenticator--gatehook--")
        for key, _, value in [arg.removeprefix("--spi-authenticator--gatehook--").partition("=")]
    }
    factory = (
        ROOT
        / "clients/keycloak/src/main/java/dev/gatehook/keycloak/GatehookAuthenticatorFactory.java"
    ).read_text()
    known = set(re.findall(r'\.name\("([a-z-]+)"\)', factory))
    assert set(spi) <= known, set(spi) - known
    assert _nats_users()[spi["nats-user"]] == spi["nats-password"]
    roles = (ROOT / "deploy" / "nats-roles.conf").read_text()
    assert f'subscribe: ["_INBOX.{spi["nats-user"]}.>"]' in roles  # the extension's prefix
    version = re.search(
        r"KEYCLOAK_VERSION = \"([^\"]+)\"", (ROOT / "tests/support/keycloak.py").read_text()
    )
    assert version is not None
    dockerfile = (ROOT / keycloak["build"]["context"] / "Dockerfile").read_text()
    assert dockerfile.count(f"quay.io/keycloak/keycloak:{version[1]}") == 2
    pom = (ROOT / "clients/keycloak/pom.xml").read_text()
    assert f"<keycloak.version>{version[1]}</keycloak.version>" in pom
    for missing, says in (
        ("KEYCLOAK_ADMIN_PASSWORD", "set KEYCLOAK_ADMIN_PASSWORD"),
        ("KEYCLOAK_DB_PASSWORD", "set KEYCLOAK_DB_PASSWORD"),
    ):
        rest = {k: v for k, v in KEYCLOAK_SECRETS.items() if k != missing}
        done = compose_config(*files, **SECRETS, **rest)
        assert done.returncode != 0, missing
        assert says in done.stderr
