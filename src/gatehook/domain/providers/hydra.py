"""Ory Hydra's token hook (``oauth2.token_hook``) as trigger requests.

Hydra v2 posts ``{"session", "request"}`` before it issues tokens, for every grant
(oauth2/token_hook.go): ``request`` holds ``client_id``, ``granted_scopes``,
``granted_audience``, ``grant_types`` and the form's ``payload``; ``session`` holds the
ID token's claims (``id_token.id_token_claims``, its extra claims under ``ext``, the subject)
and the access token's extra claims (``extra``). The answer:

- 200 ``{"session": {"access_token": {...}, "id_token": {...}}}``: these become the extra
  claims of the access token and the ID token, *replacing* what the consent gave; so gatehook
  sends the consent's claims back with its own added (its own win);
- 204: the tokens as they are;
- 403: Hydra refuses the grant with ``access_denied``;
- any other status: ``server_error``. Hydra's client retries 429 and 5xx twice (1 s, then
  2 s), so gatehook answers a call it cannot decide with 424: refused at once, not after
  three deadlines.

Two trigger requests at once, as for Okta's token hook: ``complement_token.
pre_access_token_creation`` (its ``claims`` and ``access_token_claims`` go into the access
token) and, when an ID token is issued (the ``openid`` scope was granted on an
authorization code or refresh token grant), ``pre_userinfo_creation`` (its ``claims`` go
into the ID token). A block from either refuses the grant.
"""

from __future__ import annotations

import uuid
from typing import Any

from gatehook.domain.providers import Answer, Ask, Malformed, as_object, block_message

__all__ = ["UNDECIDED", "answer", "asks", "refused", "unavailable"]

UNDECIDED = 424  # no decision: not retried by Hydra's client (it retries 429 and 5xx)
_ID_TOKEN_GRANTS = {"authorization_code", "refresh_token", "implicit"}


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed(f"{what} must be a list of strings")
    return list(value)


def _id_claims(session: dict[str, Any]) -> dict[str, Any]:
    id_token = as_object(session.get("id_token"), "session.id_token")
    return as_object(id_token.get("id_token_claims"), "session.id_token.id_token_claims")


def issues_id_token(body: dict[str, Any]) -> bool:
    """Whether the grant of ``body`` issues an ID token (openid granted on a grant that has
    one)."""
    request = as_object(body.get("request"), "request")
    grants = set(_strings(request.get("grant_types"), "request.grant_types"))
    # at the hook the token request's granted scopes are not filled in yet (Hydra v2.3
    # sends them empty): the requested ones are what the sign-in's consent granted
    scopes = _strings(request.get("granted_scopes"), "request.granted_scopes") or _strings(
        request.get("requested_scopes"), "request.requested_scopes"
    )
    return "openid" in scopes and bool(grants & _ID_TOKEN_GRANTS)


def asks(body: dict[str, Any]) -> list[Ask]:
    """The trigger requests of one token hook call: the access token's, then the ID
    token's when one is issued."""
    session = as_object(body.get("session"), "session")
    request = as_object(body.get("request"), "request")
    client_id = request.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise Malformed("request.client_id is required")
    id_token = as_object(session.get("id_token"), "session.id_token")
    claims = _id_claims(session)
    subject = id_token.get("subject") or claims.get("sub")
    grants = _strings(request.get("grant_types"), "request.grant_types")
    # a client acting for itself (client credentials) has no user: its subject is the client
    user_id = subject if isinstance(subject, str) and subject and subject != client_id else None
    user: dict[str, Any] = {}
    if user_id:
        user["id"] = user_id
        username = id_token.get("username")
        if isinstance(username, str) and username:
            user["username"] = username
    context = {
        "claims": as_object(claims.get("ext"), "session.id_token.id_token_claims.ext"),
        "hydra": {
            "client_id": client_id,
            "grant_types": grants,
            "requested_scopes": _strings(request.get("requested_scopes"), "requested_scopes"),
            "granted_scopes": _strings(request.get("granted_scopes"), "request.granted_scopes"),
            "granted_audience": _strings(
                request.get("granted_audience"), "request.granted_audience"
            ),
            "access_token": as_object(session.get("extra"), "session.extra"),
        },
    }
    common: dict[str, Any] = {
        "user": user,
        "request": {"application_id": client_id},
        "context": context,
    }
    consent = session.get("consent_challenge")
    if isinstance(consent, str) and consent:
        common["signin_id"] = consent[:128]  # one sign-in's tokens (code, refresh) share it
    triggers = ["pre_access_token_creation"]
    if issues_id_token(body):
        triggers.append("pre_userinfo_creation")
    return [
        Ask("complement_token", trigger, {"request_id": uuid.uuid4().hex, **common})
        for trigger in triggers
    ]


def answer(body: dict[str, Any], replies: list[dict[str, Any]]) -> Answer:
    """Hydra's response to the hook ``body`` given the replies to ``asks(body)``."""
    for reply in replies:
        error = reply.get("error")
        if isinstance(error, dict):
            if error.get("code") == "bad_request":
                return refused(400, str(error.get("message")))
            return unavailable(str(error.get("message")))
    for reply in replies:
        if reply.get("decision") != "continue":
            return Answer(403, {"error": "access_denied", "message": block_message(reply)}, "block")
    access_reply = replies[0]
    access = {
        **(access_reply.get("claims") or {}),
        **(access_reply.get("access_token_claims") or {}),
    }
    id_claims = replies[1].get("claims") or {} if len(replies) > 1 else {}
    if not access and not id_claims:
        return Answer(204)
    session = as_object(body.get("session"), "session")
    ext = as_object(_id_claims(session).get("ext"), "session.id_token.id_token_claims.ext")
    extra = as_object(session.get("extra"), "session.extra")
    return Answer(
        200,
        {"session": {"access_token": {**extra, **access}, "id_token": {**ext, **id_claims}}},
    )


def unavailable(message: str) -> Answer:
    """No decision in time: 424, which Hydra turns into ``server_error`` at once (a 5xx
    would be retried twice first)."""
    return Answer(UNDECIDED, {"error": "unavailable", "message": message}, "error")


def refused(status: int, message: str) -> Answer:
    """A call the gateway refuses (a key it does not accept, a malformed body...)."""
    return Answer(status, {"error": "refused", "message": message}, "refused")
