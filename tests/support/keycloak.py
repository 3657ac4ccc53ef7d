"""A real Keycloak 26.7.3 for the tests, with gatehook's extension in its providers/, as an
operator runs it (``kc.sh start-dev``), and its admin REST API to set realms up.

scripts/install-keycloak unpacks Keycloak (from Maven Central) and builds the extension;
each session copies Keycloak to a directory of its own, so runs never share its data."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gatehook.devservers import free_port

__all__ = ["KEYCLOAK_VERSION", "Keycloak", "KeycloakAdmin", "start_keycloak"]

ROOT = Path(__file__).resolve().parents[2]
KEYCLOAK_VERSION = "26.7.3"
EXTENSION = ROOT / "clients" / "keycloak" / "target" / "gatehook-keycloak.jar"
ADMIN, PASSWORD = "admin", "admin-password-of-the-tests"
CLIENT_SECRET = "app-secret-of-the-tests"  # the client app's


def _java_home() -> str:
    for candidate in (os.environ.get("GATEHOOK_JAVA_HOME"), "/usr/lib/jvm/temurin-25-jdk-amd64"):
        if candidate and Path(candidate, "bin", "java").exists():
            return candidate
    home = os.environ.get("JAVA_HOME")
    if home:
        return home
    raise RuntimeError("Keycloak needs Java 21 or later: set GATEHOOK_JAVA_HOME")


@dataclass
class Keycloak:
    """A running Keycloak: its base URL and process."""

    url: str
    management: int  # the management port: /health/ready
    proc: subprocess.Popen[bytes]
    home: Path
    args: list[str]
    env: dict[str, str]

    def log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


# a third less start-up time (the tests' Keycloak): C1 only, a small heap
QUICK_START = "-XX:TieredStopAtLevel=1 -Xms64m -Xmx768m"


def start_keycloak(
    spi: dict[str, str], timeout: float = 240.0, java_opts: str = QUICK_START
) -> Keycloak:
    """Keycloak in dev mode on a free loopback port, gatehook's extension loaded and
    configured with ``spi`` (``--spi-authenticator--gatehook--<key>=<value>``). Ready when
    the master realm's discovery document answers (30-45 s on 2 quiet cores, more loaded)."""
    cached = Path(
        os.environ.get("GATEHOOK_CACHE", Path.home() / ".cache" / "gatehook"),
        f"keycloak-{KEYCLOAK_VERSION}",
    )
    if not (cached / "bin" / "kc.sh").exists() or not EXTENSION.exists():
        raise RuntimeError(
            "Keycloak or its gatehook extension is missing: run scripts/install-keycloak"
        )
    home = Path(tempfile.mkdtemp(prefix="gatehook-keycloak-")) / "keycloak"
    shutil.copytree(cached, home, symlinks=True)
    shutil.copy(EXTENSION, home / "providers" / EXTENSION.name)
    port, management = free_port(), free_port()
    args = [
        str(home / "bin" / "kc.sh"),
        "start-dev",
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        f"--http-management-port={management}",
        "--db=dev-mem",
        "--cache=local",
        "--health-enabled=true",
        *(f"--spi-authenticator--gatehook--{k}={v}" for k, v in spi.items()),
    ]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "JAVA_HOME": _java_home(),
        "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
        "JAVA_OPTS_APPEND": java_opts,
    }
    with (home / "server.log").open("ab") as log:
        proc = subprocess.Popen(args, cwd=home, stdout=log, stderr=log, env=env)
    server = Keycloak(f"http://127.0.0.1:{port}", management, proc, home, args, env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Keycloak exited at start:\n{server.log()}")
        try:
            url = server.url + "/realms/master/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"Keycloak not ready within {timeout:.0f} s:\n{server.log()}")
        time.sleep(0.5)


class KeycloakAdmin:
    """Keycloak's admin REST API, as an operator's scripts use it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self._token = ""
        self._until = 0.0

    async def _headers(self) -> dict[str, str]:
        if time.monotonic() > self._until:
            async with self.session.post(
                self.url + "/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": ADMIN,
                    "password": PASSWORD,
                },
            ) as r:
                body = await r.json()
                assert r.status == 200, body
            self._token = body["access_token"]
            self._until = time.monotonic() + body["expires_in"] - 10
        return {"Authorization": f"Bearer {self._token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """``method`` on ``/admin/realms/<path>``; the JSON answer (None when empty)."""
        async with self.session.request(
            method, f"{self.url}/admin/realms{path}", json=body, headers=await self._headers()
        ) as r:
            text = await r.text()
            assert r.status < 300, (method, path, r.status, text)
            if r.status == 201 and "Location" in r.headers:
                return r.headers["Location"].rsplit("/", 1)[-1]
            return None if not text else await r.json(content_type=None)


async def add_step(admin: KeycloakAdmin, realm: str, flow: str, provider: str) -> None:
    """Add ``provider`` to the flow ``flow`` (a flow or a subflow, by alias), REQUIRED."""
    alias = urllib.parse.quote(flow, safe="")
    await admin.call(
        "POST",
        f"/{realm}/authentication/flows/{alias}/executions/execution",
        {"provider": provider},
    )
    executions = await admin.call("GET", f"/{realm}/authentication/flows/{alias}/executions")
    step = next(e for e in executions if e.get("providerId") == provider)
    step["requirement"] = "REQUIRED"
    await admin.call("PUT", f"/{realm}/authentication/flows/{alias}/executions", step)


async def copy_flow(admin: KeycloakAdmin, realm: str, flow: str, name: str) -> None:
    alias = urllib.parse.quote(flow, safe="")
    await admin.call("POST", f"/{realm}/authentication/flows/{alias}/copy", {"newName": name})


async def configure_realm(
    admin: KeycloakAdmin,
    realm: str,
    callback_url: str,
    *,
    step: bool = True,
    mapper: bool = True,
    tenant: str = "",
) -> None:
    """A realm set up as docs/integrations/keycloak.md says: the authenticator in the
    browser and direct grant flows, the form action in registration, the claims mapper on
    the client ``app`` (``step``/``mapper`` False: without them; ``tenant``: the realm
    attribute naming its tenant)."""
    rep: dict[str, Any] = {"realm": realm, "enabled": True, "registrationAllowed": True}
    if tenant:
        rep["attributes"] = {"gatehook.tenant": tenant}
    await admin.call("POST", "", rep)
    profile = await admin.call("GET", f"/{realm}/users/profile")
    profile["unmanagedAttributePolicy"] = "ENABLED"  # gatehook's metadata as attributes
    await admin.call("PUT", f"/{realm}/users/profile", profile)
    client_id = await admin.call(
        "POST",
        f"/{realm}/clients",
        {
            "clientId": "app",
            "enabled": True,
            "publicClient": False,
            "secret": CLIENT_SECRET,
            "standardFlowEnabled": True,
            "directAccessGrantsEnabled": True,
            "redirectUris": [callback_url],
        },
    )
    if mapper:
        await admin.call(
            "POST",
            f"/{realm}/clients/{client_id}/protocol-mappers/models",
            {
                "name": "gatehook claims",
                "protocol": "openid-connect",
                "protocolMapper": "gatehook-claims-mapper",
                "config": {
                    "access.token.claim": "true",
                    "id.token.claim": "true",
                    "userinfo.token.claim": "true",
                },
            },
        )
    if not step:
        return
    await copy_flow(admin, realm, "browser", "gatehook browser")
    await add_step(admin, realm, "gatehook browser forms", "gatehook")
    # gatehook decides when OTP is asked: the flow's own conditional OTP is off
    forms = await admin.call(
        "GET", f"/{realm}/authentication/flows/gatehook%20browser%20forms/executions"
    )
    conditional = next(e for e in forms if "Conditional" in e.get("displayName", ""))
    conditional["requirement"] = "DISABLED"
    await admin.call(
        "PUT",
        f"/{realm}/authentication/flows/gatehook%20browser%20forms/executions",
        conditional,
    )
    await copy_flow(admin, realm, "direct grant", "gatehook direct grant")
    await add_step(admin, realm, "gatehook direct grant", "gatehook")
    await copy_flow(admin, realm, "registration", "gatehook registration")
    await add_step(admin, realm, "gatehook registration registration form", "gatehook-registration")
    realm_rep = await admin.call("GET", f"/{realm}")
    realm_rep.update(
        browserFlow="gatehook browser",
        directGrantFlow="gatehook direct grant",
        registrationFlow="gatehook registration",
    )
    await admin.call("PUT", f"/{realm}", realm_rep)
