"""TLS and credentials to NATS and MongoDB: a worker configured by GATEHOOK_NATS__* and
GATEHOOK_MONGODB__* serves over a TLS nats-server that requires client certificates and a
password, over an operator-mode nats-server with a .creds file (JWT + nkey), and stores in a
TLS-only MongoDB-protocol server. The CA, certificates, keys and JWTs are made by the test."""

from __future__ import annotations

import base64
import datetime as dt
import gc
import hashlib
import ipaddress
import json
import os
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatehook.devservers import MongoTls, Server, start_mongo, start_nats
from gatehook.errors import StorageUnavailable
from gatehook.sandbox import SandboxPool
from gatehook.security.connections import connect_nats, mongo_options
from gatehook.settings import MongoSettings, NatsSettings, Settings
from gatehook.storage import MongoStore
from tests.support.workers import start_worker, stop_worker

SUBJECT = "gatehook.v1.trigger.acme.external_authentication.post_authentication"
BODY = json.dumps({"request_id": "r-tls", "user": {"id": "u1", "email": "ann@acme.com"}}).encode()


@pytest.fixture(autouse=True)
def _refused_sockets() -> Iterator[None]:
    """Clients whose TLS handshake or sign-in was refused (nats-py, PyMongo) leave their socket
    to the garbage collector: collect them here, not in whichever test runs next."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# -- a test PKI ---------------------------------------------------------------------------------
@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_pem: Path  # cert + key in one file (MongoDB's tlsCertificateKeyFile)
    stranger_ca: Path  # a CA that signed nothing here


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca[1], hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = _ca("gatehook test CA")
    server = _leaf(ca, "localhost", server=True)
    client = _leaf(ca, "gatehook-worker", server=False)
    stranger = _ca("someone else's CA")
    pem = serialization.Encoding.PEM
    paths = Pki(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server-key.pem",
        client_cert=d / "client.pem",
        client_key=d / "client-key.pem",
        client_pem=d / "client-both.pem",
        stranger_ca=d / "stranger.pem",
    )
    paths.ca.write_bytes(ca[0].public_bytes(pem))
    paths.stranger_ca.write_bytes(stranger[0].public_bytes(pem))
    paths.server_cert.write_bytes(server[0].public_bytes(pem))
    _write_key(server[1], paths.server_key)
    paths.client_cert.write_bytes(client[0].public_bytes(pem))
    _write_key(client[1], paths.client_key)
    paths.client_pem.write_bytes(paths.client_cert.read_bytes() + paths.client_key.read_bytes())
    return paths


def _context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


async def _refused(url: str, **options: Any) -> str:
    """Connect once, expecting a refusal; what the client was told."""
    try:
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2, **options
        )
    except Exception as exc:  # the client's own error for a refused TLS or auth
        return f"{type(exc).__name__}: {exc}"
    await nc.close()
    raise AssertionError(f"{url} accepted a connection it should have refused")


async def _decision(nc: nats.NATS) -> str:
    msg = await nc.request(SUBJECT, BODY, timeout=10)
    decision: str = json.loads(msg.data)["decision"]
    return decision


# -- NATS over TLS with client certificates and a password --------------------------------------
@pytest.fixture
def tls_nats(pki: Pki, tmp_path: Path) -> Iterator[Server]:
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"""
jetstream {{ store_dir: /tmp/unused }}
tls {{
  cert_file: "{pki.server_cert}"
  key_file: "{pki.server_key}"
  ca_file: "{pki.ca}"
  verify: true
}}
authorization {{
  users = [
    {{ user: gatehook-worker, password: worker-secret }}
    {{ user: acme-login, password: login-secret,
       permissions: {{ publish: ["gatehook.v1.trigger.acme.>"], subscribe: ["_INBOX.>"] }} }}
  ]
}}
"""
    )
    server = start_nats(config=str(conf))
    yield server
    server.stop()


async def test_worker_over_tls_with_a_client_certificate_and_a_password(
    tls_nats: Server, pki: Pki, settings: Settings, pool: SandboxPool
) -> None:
    settings = settings.model_copy(
        update={
            "nats_url": tls_nats.url.replace("nats://", "tls://"),
            "nats": NatsSettings(
                tls_ca_file=pki.ca,
                tls_cert_file=pki.client_cert,
                tls_key_file=pki.client_key,
                user="gatehook-worker",
                password="worker-secret",
            ),
        }
    )
    runtime, broker = await start_worker(settings, pool)
    try:
        login = await nats.connect(
            tls_nats.url,
            tls=_context(pki.ca, pki.client_cert, pki.client_key),
            user="acme-login",
            password="login-secret",
        )
        try:
            assert await _decision(login) == "continue"
        finally:
            await login.close()
        # the settings' own connection helper (the CLI and the console use it)
        admin = await connect_nats(settings)
        assert admin.connected_url is not None
        assert admin.connected_url.scheme == "tls"
        await admin.close()
        # refused: no TLS, no client certificate, a server the client cannot trust, no password
        said = [
            await _refused(tls_nats.url, user="acme-login", password="login-secret"),
            await _refused(
                tls_nats.url, tls=_context(pki.ca), user="acme-login", password="login-secret"
            ),
            await _refused(
                tls_nats.url,
                tls=_context(pki.stranger_ca, pki.client_cert, pki.client_key),
                user="acme-login",
                password="login-secret",
            ),
            await _refused(tls_nats.url, tls=_context(pki.ca, pki.client_cert, pki.client_key)),
        ]
        assert "CERTIFICATE_VERIFY_FAILED" in said[2], said
        assert "Authorization Violation" in said[3], said
    finally:
        await stop_worker(runtime, broker)


# -- NATS in operator mode: a .creds file (user JWT + nkey seed) --------------------------------
def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(prefix: int) -> nkeys.KeyPair:
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _jwt(issuer: nkeys.KeyPair, subject: str, name: str, claims: dict[str, Any]) -> str:
    """A NATS JWT (v2): ed25519-nkey signed by ``issuer``."""
    body: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**claims, "version": 2},
    }
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode()
    head = _b64u(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64u(json.dumps(body).encode())
    return f"{head}.{payload}.{_b64u(issuer.sign(f'{head}.{payload}'.encode()))}"


@dataclass
class Operator:
    server: Server
    creds: dict[str, Path]


@pytest.fixture
def operator_nats(tmp_path: Path) -> Iterator[Operator]:
    operator = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, system = _keypair(nkeys.PREFIX_BYTE_ACCOUNT), _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "wildcards": True}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    sys_pub, acc_pub = system.public_key.decode(), account.public_key.decode()
    conf = tmp_path / "operator.conf"
    conf.write_text(
        f"""
jetstream {{ store_dir: /tmp/unused }}
operator: {_jwt(operator, operator.public_key.decode(), "op", {"type": "operator"})}
system_account: {sys_pub}
resolver: MEMORY
resolver_preload: {{
  {acc_pub}: {_jwt(operator, acc_pub, "gatehook", {"type": "account", "limits": {**unlimited, **jetstream}})}
  {sys_pub}: {_jwt(operator, sys_pub, "SYS", {"type": "account", "limits": unlimited})}
}}
"""
    )
    creds = {}
    for name, perms in (
        ("worker", {}),
        (
            "acme-login",
            {"pub": {"allow": ["gatehook.v1.trigger.acme.>"]}, "sub": {"allow": ["_INBOX.>"]}},
        ),
    ):
        user = _keypair(nkeys.PREFIX_BYTE_USER)
        limits = {"subs": -1, "data": -1, "payload": -1}
        token = _jwt(account, user.public_key.decode(), name, {"type": "user", **limits, **perms})
        path = tmp_path / f"{name}.creds"
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        creds[name] = path
    server = start_nats(config=str(conf))
    yield Operator(server, creds)
    server.stop()


async def test_worker_with_a_creds_file(
    operator_nats: Operator, settings: Settings, pool: SandboxPool
) -> None:
    settings = settings.model_copy(
        update={
            "nats_url": operator_nats.server.url,
            "nats": NatsSettings(creds_file=operator_nats.creds["worker"]),
        }
    )
    runtime, broker = await start_worker(settings, pool)
    try:
        login = await nats.connect(
            operator_nats.server.url, user_credentials=str(operator_nats.creds["acme-login"])
        )
        try:
            assert await _decision(login) == "continue"
        finally:
            await login.close()
        said = await _refused(operator_nats.server.url)
        assert "Authorization Violation" in said, said
    finally:
        await stop_worker(runtime, broker)


# -- MongoDB over TLS ---------------------------------------------------------------------------
@pytest.fixture
async def tls_mongo(pki: Pki) -> AsyncIterator[Server]:
    server = start_mongo(tls=MongoTls(str(pki.server_cert), str(pki.server_key), str(pki.ca)))
    yield server
    server.stop()


async def test_storage_over_tls(tls_mongo: Server, pki: Pki, settings: Settings) -> None:
    secured = settings.model_copy(
        update={
            "mongodb_url": tls_mongo.url,
            "mongodb": MongoSettings(tls_ca_file=pki.ca, tls_cert_key_file=pki.client_pem),
        }
    )
    store = MongoStore.connect(
        secured.mongodb_url,
        secured.mongodb_database,
        timeout_ms=5000,
        client_options=mongo_options(secured),
    )
    try:
        await store.ensure_indexes()
        await store.ping()
        assert await store.current_revisions("acme") is not None
    finally:
        await store.aclose()
    # without the settings' TLS (no TLS; no client certificate): no connection
    for options in ({}, {"tls": True, "tlsCAFile": str(pki.ca)}):
        plain = MongoStore.connect(
            secured.mongodb_url, secured.mongodb_database, timeout_ms=1500, client_options=options
        )
        try:
            with pytest.raises(StorageUnavailable):
                await plain.ping()
        finally:
            await plain.aclose()


async def test_gateway_serves_https(pki: Pki) -> None:
    """`gatehook http` with a certificate: HTTPS only, its answers unchanged."""
    import asyncio

    import aiohttp

    from gatehook.settings import GatewaySettings
    from gatehook.transport.gateway import serve_gateway

    server = start_nats()
    nc = await nats.connect(server.url)
    try:

        async def keys(msg: Any) -> None:  # a worker that knows no ingress for the tenant
            await msg.respond(b'{"ok": true, "result": {"configured": false}}')

        await nc.subscribe("gatehook.v1.ingress.*.keys", cb=keys)
        settings = GatewaySettings(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
        stop, up, where = asyncio.Event(), asyncio.Event(), []

        def started(name: str) -> None:
            where.append(name)
            up.set()

        task = asyncio.create_task(serve_gateway(settings, nc, port=0, stop=stop, started=started))
        try:
            await asyncio.wait_for(up.wait(), 10)
            assert where[0].startswith("https://")
            port = where[0].rsplit(":", 1)[1]
            async with aiohttp.ClientSession() as session:
                url = f"https://localhost:{port}/zitadel/acme"
                async with session.post(url, data=b"{}", ssl=_context(pki.ca)) as r:
                    assert r.status == 401
                    body = await r.json()
                    assert body["error"] == "the call's signature or key is not accepted"
                with pytest.raises(aiohttp.ClientError):
                    async with session.post(f"http://localhost:{port}/zitadel/acme", data=b"{}"):
                        pass
        finally:  # the gateway stops even when an assertion failed (no task left behind)
            stop.set()
            await task
    finally:
        await nc.drain()
        server.stop()
