"""Console sign-in: one shared operator token, signed session cookies, CSRF tokens.

Pure (no I/O). A session is ``<operator>|<expiry>`` signed with HMAC-SHA256 under a key
derived from the token, so changing the token signs everyone out. Every form carries a CSRF
token derived from the session; the cookie is HttpOnly and SameSite=Strict as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time

__all__ = ["OPERATOR_RE", "Sessions", "is_loopback"]

OPERATOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


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

    def issue(self, operator: str, now: float | None = None) -> str:
        """A cookie value for ``operator``, valid for the session lifetime."""
        expiry = int((now or time.time()) + self._ttl)
        payload = f"{operator}|{expiry}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    def operator(self, cookie: str | None, now: float | None = None) -> str | None:
        """The operator a cookie names, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        encoded, sig = cookie.rsplit(".", 1)
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            operator, expiry = payload.rsplit("|", 1)
            expires = int(expiry)
        except ValueError:
            return None
        if not hmac.compare_digest(sig, self._sign(payload)):
            return None
        if expires < (now or time.time()) or not OPERATOR_RE.fullmatch(operator):
            return None
        return operator

    def csrf(self, cookie: str) -> str:
        """The CSRF token forms of this session carry."""
        return self._sign("csrf|" + cookie)[:32]

    def csrf_ok(self, cookie: str, given: str) -> bool:
        return hmac.compare_digest(self.csrf(cookie), given)
