"""Outbound HTTP for scripts (``zitadel/http``): allow-listed hosts, SSRF checks, hard caps.

Runs inside a sandbox child. The host name is resolved once, every resolved address is
checked, and the connection goes to the checked address (no second resolution that a
rebinding DNS server could answer differently).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FetchPolicy", "address_is_public", "fetch", "host_allowed"]

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What one script may fetch, for how long, and how much."""

    allowed_hosts: tuple[str, ...]
    timeout_s: float
    max_bytes: int
    allow_private: bool = False
    ca_file: str | None = None  # extra trust anchors (a private CA), besides the system's


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact host match, ``*.example.com`` for any subdomain of example.com, ``*`` for any."""
    host = host.lower().rstrip(".")
    for pattern in allowed:
        if pattern == "*":
            return True
        p = pattern.lower().rstrip(".")
        if p.startswith("*.") and host.endswith(p[1:]) and host != p[2:]:
            return True
        if host == p:
            return True
    return False


def address_is_public(addr: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved and metadata addresses."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip in _METADATA
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addr: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addr = addr

    def connect(self) -> None:
        self.sock = socket.create_connection((self._addr, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, addr: str, timeout: float, ca_file: str | None = None
    ) -> None:
        context = ssl.create_default_context()
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        super().__init__(host, port, timeout=timeout, context=context)
        self._addr = addr

    def connect(self) -> None:
        raw = socket.create_connection((self._addr, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch(url: str, options: dict[str, Any], policy: FetchPolicy) -> dict[str, Any]:
    """Perform one request; return ``{status, headers, body}`` or ``{error}`` (never raises
    for the script's mistakes, so the message reaches it as a thrown JS error)."""
    if not policy.allowed_hosts:
        return {"error": "outbound HTTP is not allowed for this action (no allowed hosts)"}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return {"error": f"invalid URL: {exc}"}
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {"error": "only absolute http(s) URLs can be fetched"}
    host = parts.hostname
    if not host_allowed(host, policy.allowed_hosts):
        return {"error": f"host {host} is not in the action's allowed hosts"}
    method = str(options.get("method", "GET")).upper()
    if method not in _METHODS:
        return {"error": f"method {method} is not supported"}
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return {"error": f"cannot resolve {host}: {exc}"}
    addrs = [str(info[4][0]) for info in infos]
    if not policy.allow_private and not all(address_is_public(a) for a in addrs):
        return {"error": f"host {host} resolves to a private or reserved address"}
    headers = {str(k): str(v) for k, v in dict(options.get("headers") or {}).items()}
    body = options.get("body")
    payload: bytes | None = None
    if body is not None:
        payload = (body if isinstance(body, str) else json.dumps(body)).encode()
    timeout = max(policy.timeout_s, 0.001)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = _PinnedHTTPSConnection(host, port, addrs[0], timeout, policy.ca_file)
    else:
        conn = _PinnedHTTPConnection(host, port, addrs[0], timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        conn.request(method, target, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read(policy.max_bytes + 1)
        if len(data) > policy.max_bytes:
            return {"error": f"response larger than {policy.max_bytes} bytes"}
        return {
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": data.decode("utf-8", errors="replace"),
        }
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        return {"error": f"request to {host} failed: {exc}"}
    finally:
        conn.close()
