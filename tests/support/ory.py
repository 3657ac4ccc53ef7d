"""Real Ory servers for the tests: Kratos v1.3.1 and Hydra v2.3.0, built by
scripts/install-ory from the Go module proxy, each on free loopback ports with SQLite in a
directory of its own, started by the tests as their users run them (``migrate sql``, then
``serve``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatehook.devservers import free_port

__all__ = ["OryServer", "find_ory", "start_hydra", "start_kratos"]

ROOT = Path(__file__).resolve().parents[2]
IDENTITY_SCHEMA: dict[str, Any] = {  # Kratos's own email-password quickstart schema
    "$id": "https://schemas.ory.sh/presets/kratos/quickstart/email-password/identity.schema.json",
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Person",
    "type": "object",
    "properties": {
        "traits": {
            "type": "object",
            "properties": {
                "email": {
                    "type": "string",
                    "format": "email",
                    "title": "E-Mail",
                    "minLength": 3,
                    "ory.sh/kratos": {"credentials": {"password": {"identifier": True}}},
                },
                "name": {
                    "type": "object",
                    "properties": {
                        "first": {"title": "First Name", "type": "string"},
                        "last": {"title": "Last Name", "type": "string"},
                    },
                },
            },
            "required": ["email"],
            "additionalProperties": False,
        }
    },
}


def find_ory(name: str) -> str:
    """The ``kratos`` or ``hydra`` binary: on PATH or in the venv's bin (scripts/install-ory
    puts them there); a clear failure otherwise, never a skip."""
    found = shutil.which(name) or str(ROOT / ".venv" / "bin" / name)
    if not os.access(found, os.X_OK):
        raise RuntimeError(
            f"{name} not found: run scripts/install-ory (it builds Ory Kratos and Hydra from the"
            " Go module proxy; scripts/test runs it)"
        )
    return found


@dataclass
class OryServer:
    """A running Kratos or Hydra: its public and admin URLs, its directory and log."""

    name: str
    public: str
    admin: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    config: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        """What the server printed (for a failing test's message)."""
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)

    def restart(self, config: dict[str, Any] | None = None) -> None:
        """Stop, write ``config`` if given, and start again on the same ports."""
        self.stop()
        if config is not None:
            self.config.write_text(yaml.safe_dump(config))
        self.proc = _spawn(self.args, self.workdir)
        _wait_ready(self)


def _spawn(args: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir)}
    with (workdir / "server.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=workdir, stdout=log, stderr=log, env=env)


def _wait_ready(server: OryServer, timeout: float = 120.0) -> None:
    """Poll the admin health endpoint with a bound (a loaded machine: tens of seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.admin + "/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{server.name} not ready within {timeout:.0f} s:\n{server.log()}")
        time.sleep(0.1)


def _migrate(binary: str, config: Path, workdir: Path) -> None:
    done = subprocess.run(
        [binary, "migrate", "sql", "-e", "--yes", "-c", str(config)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "DSN": _dsn(workdir)},
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{binary} migrate failed:\n{done.stdout}\n{done.stderr}")


def _dsn(workdir: Path) -> str:
    return f"sqlite://{workdir}/db.sqlite?_fk=true&mode=rwc"


def start_kratos(selfservice: dict[str, Any], extra: dict[str, Any] | None = None) -> OryServer:
    """Kratos with the password method, the quickstart's identity schema and
    ``selfservice.flows`` given (the hooks under test), migrated and serving (``--dev``:
    plain HTTP on loopback)."""
    binary = find_ory("kratos")
    workdir = Path(tempfile.mkdtemp(prefix="gatehook-kratos-"))
    (workdir / "identity.schema.json").write_text(json.dumps(IDENTITY_SCHEMA))
    public, admin = free_port(), free_port()
    config: dict[str, Any] = {
        "version": "v1.3.1",
        "dsn": _dsn(workdir),
        "serve": {
            "public": {
                "base_url": f"http://127.0.0.1:{public}/",
                "host": "127.0.0.1",
                "port": public,
            },
            "admin": {"base_url": f"http://127.0.0.1:{admin}/", "host": "127.0.0.1", "port": admin},
        },
        "selfservice": {
            "default_browser_return_url": f"http://127.0.0.1:{public}/",
            # (no haveibeenpwned look-up: these machines reach no outside host, and each
            # sign-up would wait for it to fail)
            "methods": {"password": {"enabled": True, "config": {"haveibeenpwned_enabled": False}}},
            **selfservice,
        },
        "identity": {
            "default_schema_id": "default",
            "schemas": [{"id": "default", "url": f"file://{workdir}/identity.schema.json"}],
        },
        "courier": {
            "smtp": {"connection_uri": "smtps://test:test@127.0.0.1:1/?skip_ssl_verify=true"}
        },
        "log": {"level": "warning", "format": "text"},
        "secrets": {
            "cookie": ["gatehook-tests-cookie-secret-0123"],
            "cipher": ["0123456789abcdef0123456789abcdef"],
        },
        **(extra or {}),
    }
    path = workdir / "kratos.yml"
    path.write_text(yaml.safe_dump(config))
    _migrate(binary, path, workdir)
    args = [binary, "serve", "--dev", "--sqa-opt-out", "--watch-courier=false", "-c", str(path)]
    server = OryServer(
        "kratos",
        f"http://127.0.0.1:{public}",
        f"http://127.0.0.1:{admin}",
        _spawn(args, workdir),
        workdir,
        path,
        args,
    )
    _wait_ready(server)
    return server


def start_hydra(oauth2: dict[str, Any], extra: dict[str, Any] | None = None) -> OryServer:
    """Hydra with ``oauth2`` settings (the token hook under test), migrated and serving
    (``--dev``: plain HTTP on loopback). Its login and consent UI are the test's own."""
    binary = find_ory("hydra")
    workdir = Path(tempfile.mkdtemp(prefix="gatehook-hydra-"))
    public, admin = free_port(), free_port()
    config: dict[str, Any] = {
        "dsn": _dsn(workdir),
        "serve": {
            "public": {"host": "127.0.0.1", "port": public},
            "admin": {"host": "127.0.0.1", "port": admin},
        },
        "urls": {
            "self": {"issuer": f"http://127.0.0.1:{public}/"},
            "login": "http://127.0.0.1:1/login",
            "consent": "http://127.0.0.1:1/consent",
        },
        "secrets": {"system": ["gatehook-tests-hydra-system-secret"]},
        "oidc": {"subject_identifiers": {"supported_types": ["public"]}},
        "log": {"level": "warn"},
        "oauth2": oauth2,
        **(extra or {}),
    }
    path = workdir / "hydra.yml"
    path.write_text(yaml.safe_dump(config))
    _migrate(binary, path, workdir)
    # (no telemetry: these machines reach no outside host)
    args = [binary, "serve", "all", "--dev", "--sqa-opt-out", "-c", str(path)]
    server = OryServer(
        "hydra",
        f"http://127.0.0.1:{public}",
        f"http://127.0.0.1:{admin}",
        _spawn(args, workdir),
        workdir,
        path,
        args,
    )
    _wait_ready(server)
    return server
