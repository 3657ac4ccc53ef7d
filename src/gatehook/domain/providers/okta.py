"""Okta inline hooks as trigger requests.

- Token inline hook (``com.okta.oauth2.tokens.transform``): ``data.context`` (request,
  protocol, session, user), ``data.identity.claims``, ``data.access.claims``. Two trigger
  requests at once: ``complement_token.pre_userinfo_creation`` for the ID token and
  ``pre_access_token_creation`` for the access token; their claims become
  ``com.okta.identity.patch`` and ``com.okta.access.patch`` commands.
- Registration inline hook (``com.okta.user.pre-registration``): ``data.userProfile``; one
  trigger request at ``internal_authentication.pre_creation``; a block becomes
  ``com.okta.action.update`` DENY with an ``error``, user updates a
  ``com.okta.user.profile.update`` command.

A reply that is not ``continue`` (and no decision in time) is answered with Okta's ``error``
object, which makes Okta refuse the token or the registration: a hook that cannot decide
never lets a sign-in through unchecked.
"""

from __future__ import annotations

import uuid
from typing import Any

from gatehook.domain.providers import Answer, Ask, Malformed, as_object, block_message

__all__ = ["registration_answer", "registration_ask", "token_answer", "token_asks", "unavailable"]

_PROFILE = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "username": "login",
    "display_name": "displayName",
    "nick_name": "nickName",
    "phone": "mobilePhone",
    "preferred_language": "preferredLanguage",
}


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise Malformed("an Okta inline hook call has a data object")
    return data


def _request(context: dict[str, Any], client: dict[str, Any]) -> dict[str, Any]:
    request = as_object(context.get("request"), "data.context.request")
    out = {"ip": request.get("ipAddress"), "application_id": client.get("id")}
    return {k: v for k, v in out.items() if isinstance(v, str)}


def token_asks(body: dict[str, Any]) -> list[Ask]:
    """The two trigger requests of a token inline hook call (ID token, access token)."""
    data = _data(body)
    context = as_object(data.get("context"), "data.context")
    user_raw = as_object(context.get("user"), "data.context.user")
    profile = as_object(user_raw.get("profile"), "data.context.user.profile")
    protocol = as_object(context.get("protocol"), "data.context.protocol")
    client = as_object(protocol.get("client"), "data.context.protocol.client")
    session = as_object(context.get("session"), "data.context.session")
    user = {
        "id": user_raw.get("id"),
        "username": profile.get("login"),
        "email": profile.get("email") or profile.get("login"),
        "first_name": profile.get("firstName"),
        "last_name": profile.get("lastName"),
        "profile": profile,
    }
    user = {k: v for k, v in user.items() if v is not None}
    okta = {
        "eventType": body.get("eventType"),
        "eventId": body.get("eventId"),
        "protocol": protocol,
        "session": session,
    }
    signin = session.get("id") if isinstance(session.get("id"), str) else None
    asks = []
    for part, trigger in (
        ("identity", "pre_userinfo_creation"),
        ("access", "pre_access_token_creation"),
    ):
        token = as_object(data.get(part), f"data.{part}")
        claims = as_object(token.get("claims"), f"data.{part}.claims")
        request: dict[str, Any] = {
            "request_id": uuid.uuid4().hex,
            "user": user,
            "request": _request(context, client),
            "context": {"claims": claims, "okta": okta | {"token": part}},
        }
        if signin:
            request["signin_id"] = signin[:128]
        asks.append(Ask("complement_token", trigger, request))
    return asks


def _pointer(name: str) -> str:
    return "/claims/" + name.replace("~", "~0").replace("/", "~1")


def _error(message: str, reason: Any = None) -> dict[str, Any]:
    cause = {"errorSummary": message, "reason": str(reason or "refused"), "domain": "end-user"}
    return {"errorSummary": message, "errorCauses": [cause]}


def _not_continue(replies: list[dict[str, Any]]) -> dict[str, Any] | None:
    for reply in replies:
        if reply.get("error") is not None or reply.get("decision") != "continue":
            return reply
    return None


def _error_text(reply: dict[str, Any]) -> str:
    error = reply.get("error")
    return str(error.get("message")) if isinstance(error, dict) else block_message(reply)


def token_answer(body: dict[str, Any], replies: list[dict[str, Any]]) -> Answer:
    """Okta's response to a token inline hook: patch commands, or an ``error``."""
    refused = _not_continue(replies)
    if refused is not None:
        outcome = "error" if refused.get("error") is not None else "block"
        return Answer(200, {"error": _error(_error_text(refused), refused.get("reason"))}, outcome)
    data = _data(body)
    commands = []
    for part, reply in zip(("identity", "access"), replies, strict=True):
        existing = as_object(as_object(data.get(part), part).get("claims"), part)
        ops = [
            {"op": "replace" if k in existing else "add", "path": _pointer(k), "value": v}
            for k, v in (reply.get("claims") or {}).items()
        ]
        if ops:
            commands.append({"type": f"com.okta.{part}.patch", "value": ops})
    return Answer(200, {"commands": commands})


def registration_ask(body: dict[str, Any]) -> Ask:
    """The trigger request of a registration inline hook call."""
    data = _data(body)
    profile = as_object(data.get("userProfile"), "data.userProfile")
    context = as_object(data.get("context"), "data.context")
    user = {
        "username": profile.get("login"),
        "email": profile.get("email") or profile.get("login"),
        "first_name": profile.get("firstName"),
        "last_name": profile.get("lastName"),
        "profile": profile,
    }
    return Ask(
        "internal_authentication",
        "pre_creation",
        {
            "request_id": uuid.uuid4().hex,
            "user": {k: v for k, v in user.items() if v is not None},
            "request": _request(context, {}),
            "context": {"okta": {"eventType": body.get("eventType"), "action": data.get("action")}},
        },
    )


def registration_answer(reply: dict[str, Any]) -> Answer:
    """Okta's response to a registration inline hook: DENY with an ``error``, or ALLOW
    with the profile updates."""
    if _not_continue([reply]) is not None:
        outcome = "error" if reply.get("error") is not None else "block"
        return Answer(
            200,
            {
                "commands": [{"type": "com.okta.action.update", "value": {"registration": "DENY"}}],
                "error": _error(_error_text(reply), reply.get("reason")),
            },
            outcome,
        )
    profile: dict[str, Any] = {}
    for field, value in (reply.get("user_updates") or {}).items():
        profile[_PROFILE.get(field, field)] = value
    for entry in reply.get("metadata") or []:
        if isinstance(entry, dict) and entry.get("key"):
            profile[str(entry["key"])] = entry.get("value")
    commands: list[dict[str, Any]] = [
        {"type": "com.okta.action.update", "value": {"registration": "ALLOW"}}
    ]
    if profile:
        commands.append({"type": "com.okta.user.profile.update", "value": profile})
    return Answer(200, {"commands": commands})


def unavailable(message: str, *, registration: bool = False) -> Answer:
    """No decision in time: Okta's ``error`` (a registration is also denied)."""
    body: dict[str, Any] = {"error": _error(message, "unavailable")}
    if registration:
        body["commands"] = [{"type": "com.okta.action.update", "value": {"registration": "DENY"}}]
    return Answer(200, body, "error")
