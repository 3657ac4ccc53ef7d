"""Auth0 Actions as a script style: which exported handler runs at which trigger.

A script that assigns ``exports.onExecutePostLogin`` (or one of the other handlers below) is
an Auth0 Action and runs unchanged: the sandbox runtime builds Auth0's ``event`` from the
trigger request and maps Auth0's ``api`` calls to the reply (docs/contract.md, "Auth0
Actions"). The triggers such a script is compatible with follow from what it exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gatehook.domain.catalogue import Trigger

__all__ = [
    "CACHE_ENTRIES",
    "EXPORTS",
    "HANDLERS",
    "bounded_cache_writes",
    "compatible_triggers",
    "handler_for",
]

POST_LOGIN = "onExecutePostLogin"
CONTINUE_POST_LOGIN = "onContinuePostLogin"
PRE_REGISTRATION = "onExecutePreUserRegistration"
POST_REGISTRATION = "onExecutePostUserRegistration"
CREDENTIALS_EXCHANGE = "onExecuteCredentialsExchange"

#: The handlers the runtime looks for on ``exports``.
EXPORTS = (
    POST_LOGIN,
    CONTINUE_POST_LOGIN,
    PRE_REGISTRATION,
    POST_REGISTRATION,
    CREDENTIALS_EXCHANGE,
)

#: Per trigger, the handlers that may run there, the preferred first.
HANDLERS: dict[Trigger, tuple[str, ...]] = {
    Trigger.POST_AUTHENTICATION: (POST_LOGIN,),
    Trigger.PRE_USERINFO_CREATION: (POST_LOGIN,),
    Trigger.PRE_ACCESS_TOKEN_CREATION: (POST_LOGIN, CREDENTIALS_EXCHANGE),
    Trigger.PRE_SAML_RESPONSE: (POST_LOGIN,),
    Trigger.PRE_CREATION: (PRE_REGISTRATION,),
    Trigger.POST_CREATION: (POST_REGISTRATION,),
}

#: ``context.transaction.protocol`` of a machine-to-machine token request: at
#: ``pre_access_token_creation`` it runs ``onExecuteCredentialsExchange`` when exported.
CLIENT_CREDENTIALS = "oauth2-client-credentials"


def compatible_triggers(exports: Iterable[str]) -> list[Trigger]:
    """The triggers a script exporting ``exports`` can be attached to, in catalogue order."""
    have = set(exports)
    return [tr for tr in Trigger if have.intersection(HANDLERS.get(tr, ()))]


def handler_for(
    trigger: str, exports: Iterable[str], protocol: object = None, resuming: bool = False
) -> str | None:
    """The handler that runs at ``trigger`` (None: the script exports none for it).

    ``protocol`` is the request's ``context.transaction.protocol``; ``resuming``, whether the
    request carries ``context.continue`` (the sign-in came back from a redirect): then an
    action with ``onContinuePostLogin`` resumes there."""
    try:
        names = HANDLERS[Trigger(trigger)]
    except ValueError:
        return None
    have = set(exports)
    if resuming and POST_LOGIN in names and CONTINUE_POST_LOGIN in have:
        return CONTINUE_POST_LOGIN
    exchange = CREDENTIALS_EXCHANGE in names and CREDENTIALS_EXCHANGE in have
    if exchange and (protocol == CLIENT_CREDENTIALS or POST_LOGIN not in have):
        return CREDENTIALS_EXCHANGE
    return next((n for n in names if n in have), None)


# ``api.cache``'s bounds, Auth0's own: kept by the runtime in the script, and again by the
# worker on what the script hands back (a script can change its own runtime's checks).
CACHE_ENTRIES = 20
CACHE_VALUE_BYTES = 4096
CACHE_TTL_MS = 15 * 60 * 1000
CACHE_MAX_TTL_MS = 24 * 3600 * 1000


def bounded_cache_writes(
    writes: Iterable[Mapping[str, Any]], live: Iterable[str], now_ms: int
) -> tuple[list[dict[str, Any]], int]:
    """``writes`` (``{"op", "key", "value", "expires_at"}``) as the worker stores them given
    the keys ``live`` now: each expiry within ``CACHE_MAX_TTL_MS`` (the default TTL when
    none), and a write dropped when its value is too large, it is already expired, or it
    would hold more than ``CACHE_ENTRIES`` keys. Returns the writes kept and the count of
    those dropped."""
    keys = set(live)
    kept: list[dict[str, Any]] = []
    dropped = 0
    for w in writes:
        key = str(w.get("key"))
        if w.get("op") == "delete":
            keys.discard(key)
            kept.append({"op": "delete", "key": key})
            continue
        value = w.get("value")
        raw = w.get("expires_at")
        expires = int(raw) if isinstance(raw, int | float) else now_ms + CACHE_TTL_MS
        expires = min(expires, now_ms + CACHE_MAX_TTL_MS)
        too_big = not isinstance(value, str) or len(value.encode()) > CACHE_VALUE_BYTES
        if too_big or expires <= now_ms or (key not in keys and len(keys) >= CACHE_ENTRIES):
            dropped += 1
            continue
        keys.add(key)
        kept.append({"op": "set", "key": key, "value": value, "expires_at": expires})
    return kept, dropped
