"""Connection options that carry TLS and credentials, from the settings, for every NATS
connection (the worker's broker, the console, the CLI) and the MongoDB client."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats
from faststream.nats.security import NatsCredentials, NatsSecurity, NatsUserPassword
from faststream.security import BaseSecurity
from nats.aio.client import Client as NATS

from gatehook.errors import ConfigError, Forbidden
from gatehook.settings import NatsSettings, Settings

__all__ = [
    "Refusals",
    "broker_security",
    "connect_nats",
    "mongo_options",
    "nats_options",
    "nats_tls",
    "redact_url",
]

T = TypeVar("T")


def nats_tls(nats: NatsSettings) -> ssl.SSLContext | None:
    """A client TLS context when TLS is configured: the CA to check the server with (else
    the system's), and a client certificate when the server asks for one."""
    if not nats.tls and nats.tls_key_file is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(nats.tls_ca_file) if nats.tls_ca_file else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if nats.tls_cert_file is not None:
            key = str(nats.tls_key_file) if nats.tls_key_file else None
            ctx.load_cert_chain(str(nats.tls_cert_file), key)
        elif nats.tls_key_file is not None:
            raise ConfigError("GATEHOOK_NATS__TLS_KEY_FILE is set without __TLS_CERT_FILE")
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"NATS TLS settings: {exc}") from None
    return ctx


def _creds_file(nats: NatsSettings) -> str | None:
    """The configured .creds file's path, checked to be a file."""
    if nats.creds_file is None:
        return None
    if not nats.creds_file.is_file():
        raise ConfigError(f"GATEHOOK_NATS__CREDS_FILE {nats.creds_file} is not a file")
    return str(nats.creds_file)


def nats_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` (servers not included)."""
    nats = settings.nats
    opts: dict[str, Any] = {"inbox_prefix": settings.nats_inbox_prefix}
    tls = nats_tls(nats)
    if tls is not None:
        opts["tls"] = tls
    if nats.tls_hostname:
        opts["tls_hostname"] = nats.tls_hostname
    creds = _creds_file(nats)
    if creds is not None:
        opts["user_credentials"] = creds
    if nats.user is not None:
        opts["user"] = nats.user
        opts["password"] = nats.password.get_secret_value() if nats.password else ""
    return opts


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same options as FastStream's broker takes them."""
    nats = settings.nats
    tls = nats_tls(nats)
    common: dict[str, Any] = {"ssl_context": tls, "tls_hostname": nats.tls_hostname}
    creds = _creds_file(nats)
    if creds is not None:
        return NatsCredentials(credentials=creds, **common)
    if nats.user is not None:
        password = nats.password.get_secret_value() if nats.password else ""
        return NatsUserPassword(username=nats.user, password=password, **common)
    if tls is not None:
        return NatsSecurity(**common)
    return None


def mongo_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for the MongoDB client (TLS)."""
    m = settings.mongodb
    opts: dict[str, Any] = {}
    if m.tls or m.tls_ca_file or m.tls_cert_key_file:
        opts["tls"] = True
    if m.tls_ca_file is not None:
        opts["tlsCAFile"] = str(m.tls_ca_file)
    if m.tls_cert_key_file is not None:
        opts["tlsCertificateKeyFile"] = str(m.tls_cert_key_file)
    if m.tls_allow_invalid_hostnames:
        opts["tlsAllowInvalidHostnames"] = True
    return opts


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for log lines and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


async def connect_nats(settings: Settings, **kwargs: Any) -> NATS:
    """A NATS connection to the configured servers with the configured TLS and credentials."""
    return await nats.connect(servers=settings.nats_servers, **nats_options(settings), **kwargs)


class Refusals:
    """The permission violations a NATS server reports on one connection, so that a call
    the server refused ends at once with ``Forbidden`` instead of waiting for a reply that
    cannot come (a request to a subject the user may not publish to is dropped, and the
    server says so only on the connection's error channel).

    ``connect_nats(settings, error_cb=refusals.on_error)``, then ``await refusals.guard(...)``.
    """

    def __init__(self, user: str | None = None) -> None:
        self._user = user
        self._seen: list[str] = []
        self._event = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        """nats-py's ``error_cb``."""
        text = str(exc)
        if "permissions violation" in text.lower():
            self._seen.append(text.removeprefix("nats: "))
            self._event.set()

    async def guard(self, call: Awaitable[T]) -> T:
        """``call``'s result; ``Forbidden`` as soon as the server refuses something on this
        connection while it runs."""
        task = asyncio.ensure_future(call)
        refused = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            who = f"NATS user {self._user}" if self._user else "this NATS user"
            raise Forbidden(
                f"permission denied: the NATS server refused {who} ({self._seen[0]}):"
                " its role may not do this (deploy/nats-roles.conf)"
            )
        return task.result()
