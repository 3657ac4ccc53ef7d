"""Console sign-in: signed session cookies with the operator's roles, CSRF tokens.

Pure (no I/O). A session is ``<operator>|<expiry>|<roles>|<method>`` signed with HMAC-SHA256
under a key derived from the console token, so changing the token signs everyone out (a
cookie from before ``<method>`` was added still reads, with no method). Roles are
``tenant=role`` pairs (role ``viewer`` or ``editor``; tenant ``*`` for every tenant): the
shared token gives ``*=editor``, OpenID Connect what the provider's claim says
(``gatehook.console.oidc``). Every form carries a CSRF token derived from the session; the
cookie is HttpOnly and SameSite=Strict as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from dataclasses import dataclass

__all__ = ["EVERY_TENANT", "METHODS", "OPERATOR_RE", "ROLES", "Session", "Sessions", "is_loopback"]

OPERATOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
ROLES = ("viewer", "editor")
EVERY_TENANT = {"*": "editor"}  # the shared token's roles
_ROLE_KEY = re.compile(r"\*|[a-z0-9][a-z0-9-]{0,62}")
METHODS = ("token", "oidc")


@dataclass(frozen=True)
class Session:
    """Who is signed in, and what they may do per tenant."""

    operator: str
    roles: dict[str, str]
    method: str | None = None  # how the operator signed in: "token" or "oidc"

    def role(self, tenant: str) -> str | None:
        """``editor``, ``viewer`` or None (no access) for ``tenant``."""
        return self.roles.get(tenant) or self.roles.get("*")

    @property
    def every_tenant(self) -> bool:
        return "*" in self.roles


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Sessions:
    """Signs and checks session cookies and CSRF tokens for one operator token."""

    def __init__(self, token: str, ttl_s: float) -> None:
        self._token = token.encode()
        self._key = hashlib.sha256(b"gatehook-console\0" + self._token).digest()
        self._ttl = ttl_s

    def token_ok(self, given: str) -> bool:
        """Constant-time comparison with the operator token."""
        return hmac.compare_digest(given.encode(), self._token)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(
        self,
        operator: str,
        roles: dict[str, str] | None = None,
        now: float | None = None,
        method: str = "token",
    ) -> str:
        """A cookie value for ``operator`` with ``roles`` (default: editor of every tenant),
        signed in by ``method`` (``token`` or ``oidc``), valid for the session lifetime."""
        if method not in METHODS:
            raise ValueError(f"sign-in method is one of {METHODS}, not {method!r}")
        expiry = int((now or time.time()) + self._ttl)
        granted = EVERY_TENANT if roles is None else roles
        packed = ",".join(f"{t}={r}" for t, r in sorted(granted.items()))
        payload = f"{operator}|{expiry}|{packed}|{method}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        encoded, sig = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            operator, expiry, packed, *rest = payload.split("|", 3)
            expires = int(expiry)
            roles = dict(pair.split("=", 1) for pair in packed.split(",") if pair)
        except ValueError:
            return None
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        if expires < (now or time.time()) or not OPERATOR_RE.fullmatch(operator):
            return None
        if not all(_ROLE_KEY.fullmatch(t) and r in ROLES for t, r in roles.items()):
            return None
        method = rest[0] if rest else None
        if method is not None and method not in METHODS:
            return None
        return Session(operator, roles, method)

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator a cookie names, or None when it is missing, forged or expired."""
        found = self.session(cookie, now)
        return None if found is None else found.operator

    def csrf(self, cookie: str) -> str:
        """The CSRF token forms of this session carry."""
        return self._sign("csrf|" + cookie)[:32]

    def csrf_ok(self, cookie: str, given: str) -> bool:
        return hmac.compare_digest(self.csrf(cookie), given)
