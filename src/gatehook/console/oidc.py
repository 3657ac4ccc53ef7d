"""Console sign-in with OpenID Connect: the authorization code flow with PKCE (S256).

``start`` sends the browser to the provider with a fresh ``state``, ``nonce`` and PKCE
verifier, kept here (in memory, ten minutes) and bound to the browser by a cookie holding
the state; ``finish`` takes the code back, redeems it at the token endpoint with the
verifier, and checks the ID token: signature (the provider's JWKS, asymmetric algorithms
only), issuer, audience, expiry and nonce. The operator's name and roles per tenant come from
its claims (``OidcSettings``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import jwt

from gatehook.console.auth import OPERATOR_RE, ROLES, is_loopback
from gatehook.domain.catalogue import TENANT_RE
from gatehook.errors import ConfigError, GatehookError
from gatehook.settings import OidcSettings

__all__ = ["Identity", "Oidc", "SignInRefused", "roles_from_claim"]

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
PENDING_S = 600.0
PENDING_PER_CLIENT = 16  # sign-ins under way from one address (its oldest dropped past it)
PENDING_MAX = 10_000  # in all (the oldest dropped past it)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


class SignInRefused(GatehookError):
    """The provider's answer does not sign anyone in (said on the sign-in page)."""

    code = "forbidden"


@dataclass(frozen=True)
class Identity:
    """Who the ID token names, and their roles per tenant."""

    operator: str
    subject: str
    roles: dict[str, str]


@dataclass
class _Pending:
    nonce: str
    verifier: str
    next: str
    until: float
    client: str = ""


def roles_from_claim(value: Any) -> dict[str, str]:
    """Roles per tenant from the claim: ``{"acme": "editor"}`` or ``["acme:editor"]``.
    Entries that name no valid tenant (or ``*``) or no known role are left out; where a
    tenant is named twice, the stronger role wins."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, str) and ":" in entry:
                tenant, role = entry.split(":", 1)
                pairs.append((tenant, role))
    roles: dict[str, str] = {}
    for tenant, role in pairs:
        if not isinstance(tenant, str) or role not in ROLES:
            continue
        if tenant != "*" and not TENANT_RE.fullmatch(tenant):
            continue
        if roles.get(tenant) != "editor":
            roles[tenant] = role
    return roles


def _operator_name(claims: dict[str, Any], name_claim: str) -> str:
    raw = claims.get(name_claim) or claims.get("email") or claims.get("sub") or ""
    name = _UNSAFE.sub("_", str(raw))[:64].lstrip("_.@-")
    if not OPERATOR_RE.fullmatch(name):
        raise SignInRefused(f"the ID token has no usable {name_claim} (nor email, sub)")
    return name


class Oidc:
    """One provider: discovery and keys fetched once (keys again for an unknown key id)."""

    def __init__(self, settings: OidcSettings) -> None:
        if settings.issuer is None:
            raise ConfigError("OpenID Connect needs GATEHOOK_CONSOLE__OIDC__ISSUER")
        parts = urlsplit(settings.issuer)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            raise ConfigError("the OpenID Connect issuer must be https (http only on loopback)")
        self.settings = settings
        self.issuer = settings.issuer.rstrip("/")
        self._meta: dict[str, Any] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._pending: dict[str, _Pending] = {}  # by state, oldest first
        self._by_client: dict[str, list[str]] = {}  # states by client, oldest first
        self._http: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    async def _get(self, url: str) -> dict[str, Any]:
        try:
            async with self._session().get(url) as resp:
                resp.raise_for_status()
                data: dict[str, Any] = await resp.json(content_type=None)
                return data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInRefused(f"the OpenID provider cannot be reached: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (checked to name this issuer)."""
        if self._meta is None:
            meta = await self._get(self.issuer + "/.well-known/openid-configuration")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise SignInRefused("the provider's discovery document names another issuer")
            self._meta = meta
        return self._meta

    def _drop(self, state: str) -> None:
        pending = self._pending.pop(state, None)
        if pending is None:
            return
        mine = self._by_client.get(pending.client)
        if mine is not None:
            if state in mine:
                mine.remove(state)
            if not mine:
                del self._by_client[pending.client]

    def redirect_uri(self, base: str) -> str:
        return self.settings.redirect_url or base.rstrip("/") + "/oidc/callback"

    async def start(self, base: str, next_url: str, client: str = "") -> tuple[str, str]:
        """The provider's authorization URL, and the state to bind to the browser.

        Sign-ins under way are bounded per client (its address): past ``PENDING_PER_CLIENT``
        its oldest is dropped, so one client starting sign-ins without end fills no table
        and locks no other operator out; past ``PENDING_MAX`` in all, the oldest goes."""
        meta = await self.metadata()
        now = time.monotonic()
        while self._pending:
            oldest = next(iter(self._pending))
            if self._pending[oldest].until >= now:
                break
            self._drop(oldest)
        while len(self._by_client.get(client, ())) >= PENDING_PER_CLIENT:
            self._drop(self._by_client[client][0])
        while len(self._pending) >= PENDING_MAX:
            self._drop(next(iter(self._pending)))
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        self._pending[state] = _Pending(nonce, verifier, next_url, now + PENDING_S, client)
        self._by_client.setdefault(client, []).append(state)
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri(base),
            "scope": self.settings.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        return f"{meta['authorization_endpoint']}?{urlencode(query)}", state

    async def finish(
        self, base: str, code: str, state: str, bound_state: str | None
    ) -> tuple[Identity, str]:
        """Redeem ``code``: the identity, and where the operator was going."""
        pending = self._pending.get(state)
        if pending is not None:
            self._drop(state)
        if pending is None or pending.until < time.monotonic():
            raise SignInRefused("this sign-in expired or was used already: start again")
        if not bound_state or not secrets.compare_digest(bound_state, state):
            raise SignInRefused("this sign-in was started in another browser: start again")
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri(base),
            "client_id": self.settings.client_id,
            "code_verifier": pending.verifier,
        }
        auth = None
        if self.settings.client_secret is not None:
            auth = aiohttp.BasicAuth(
                self.settings.client_id, self.settings.client_secret.get_secret_value()
            )
        try:
            async with self._session().post(meta["token_endpoint"], data=form, auth=auth) as r:
                tokens = await r.json(content_type=None)
                if r.status != 200:
                    raise SignInRefused(
                        f"the provider refused the code: {tokens.get('error', r.status)}"
                    )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInRefused(f"the OpenID provider cannot be reached: {exc}") from None
        claims = await self._verify(str(tokens.get("id_token", "")), pending.nonce)
        roles = roles_from_claim(claims.get(self.settings.roles_claim))
        name = _operator_name(claims, self.settings.name_claim)
        if not roles:
            raise SignInRefused(
                f"{name} has no console role (claim {self.settings.roles_claim}): ask for one"
            )
        return Identity(name, str(claims.get("sub", "")), roles), pending.next

    async def _verify(self, token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SignInRefused("the provider sent no valid ID token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise SignInRefused(f"ID token algorithm {alg!r} is not accepted")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.settings.client_id,
                issuer=self.issuer,
                leeway=60,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise SignInRefused(f"the ID token is not valid: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInRefused("the ID token's nonce is not this sign-in's")
        return claims

    async def _key(self, kid: Any) -> jwt.PyJWK:
        if kid not in self._keys:
            meta = await self.metadata()
            jwks = await self._get(meta["jwks_uri"])
            self._keys = {}
            for jwk in jwks.get("keys", []):
                try:
                    self._keys[jwk.get("kid")] = jwt.PyJWK(jwk)
                except jwt.PyJWTError:
                    continue  # a key of a kind not used for ID tokens here
        key = self._keys.get(kid)
        if key is None:
            raise SignInRefused("the ID token is signed with a key the provider does not list")
        return key
