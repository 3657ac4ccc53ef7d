"""Ory Kratos web hooks as trigger requests.

Kratos renders a web hook's body with a Jsonnet template; the one in
docs/integrations/kratos.md sends ``{"flow", "identity", "request_headers", "request_url",
"request_method"}`` (``identity`` only on ``after`` hooks). The reply becomes:

- a block (or ``demand_mfa``/``redirect``, which Kratos cannot act on) -> HTTP 403 with
  Kratos's ``messages`` format, which interrupts the flow when the hook has
  ``response.parse: true`` (or the older ``can_interrupt: true``);
- user updates or metadata on an ``after`` hook -> HTTP 200 ``{"identity": {"traits",
  "metadata_public"}}``, which Kratos applies with ``response.parse: true``;
- anything else -> 204.

Kratos (v1.3, selfservice/hook/web_hook.go) shows the ``messages`` of any answer of 400 or
more, but its HTTP client retries 429 and 5xx twice (waiting 1 s, then 2 s) and then drops
the body. So every answer of gatehook's own, a call refused or no decision in time, is a
4xx that is not retried (424 when gatehook cannot decide), with the reason in ``messages``:
the user reads it at once, never "giving up after 3 attempts".

At registration Kratos sends the identity before it is stored: its ``id`` is the nil UUID,
the same for every sign-up, so it is no user id and is left out.
"""

from __future__ import annotations

import uuid
from typing import Any

from gatehook.domain.providers import Answer, Ask, Malformed, as_object, block_message

__all__ = ["MESSAGE_ID", "NIL_ID", "UNDECIDED", "answer", "ask", "refused", "unavailable"]

MESSAGE_ID = 4000001  # Kratos's "validation failed" family: shown to the user as an error
NIL_ID = "00000000-0000-0000-0000-000000000000"  # an identity not stored yet
UNDECIDED = 424  # no decision: not retried by Kratos's client (it retries 429 and 5xx)


def _header(headers: dict[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            if isinstance(value, list):
                return str(value[0]) if value else None
            return str(value)
    return None


def _name_part(traits: dict[str, Any], part: str) -> Any:
    name = traits.get("name")
    return name.get(part) if isinstance(name, dict) else None


def ask(flow_type: str, trigger: str, body: dict[str, Any]) -> Ask:
    """The trigger request for a Kratos web hook ``body`` at ``flow_type.trigger``."""
    flow = as_object(body.get("flow"), "flow")
    identity = as_object(body.get("identity"), "identity")
    traits = as_object(identity.get("traits"), "identity.traits")
    headers = as_object(body.get("request_headers"), "request_headers")
    addresses = identity.get("verifiable_addresses") or []
    if not isinstance(addresses, list):
        raise Malformed("identity.verifiable_addresses must be a list")
    email = traits.get("email") if isinstance(traits.get("email"), str) else None
    verified = any(
        isinstance(a, dict) and a.get("value") == email and a.get("verified") is True
        for a in addresses
    )
    identity_id = identity.get("id")
    user: dict[str, Any] = {
        "id": None if identity_id == NIL_ID else identity_id,
        "username": traits.get("username") if isinstance(traits.get("username"), str) else None,
        "email": email,
        "email_verified": verified if email else None,
        "first_name": _name_part(traits, "first"),
        "last_name": _name_part(traits, "last"),
        "metadata": as_object(identity.get("metadata_public"), "identity.metadata_public"),
        "traits": traits,
    }
    forwarded = _header(headers, "true-client-ip") or _header(headers, "x-forwarded-for")
    request = {
        "ip": forwarded.split(",")[0].strip() if forwarded else None,
        "user_agent": _header(headers, "user-agent"),
    }
    flow_id = flow.get("id")
    return Ask(
        flow_type,
        trigger,
        {
            "request_id": uuid.uuid4().hex,
            "signin_id": str(flow_id)[:128] if flow_id else None,
            "user": {k: v for k, v in user.items() if v is not None},
            "request": {k: v for k, v in request.items() if v is not None},
            "context": {
                "kratos": {
                    "flow": {k: flow.get(k) for k in ("id", "type", "request_url", "state")},
                    "request_url": body.get("request_url"),
                    "request_method": body.get("request_method"),
                    "identity": identity or None,
                }
            },
        },
    )


def _messages(text: str, reason: Any) -> dict[str, Any]:
    return {
        "messages": [
            {
                "instance_ptr": "#/",
                "messages": [
                    {"id": MESSAGE_ID, "text": text, "type": "error", "context": {"reason": reason}}
                ],
            }
        ]
    }


_TRAITS = {"email": "email", "username": "username"}


def answer(body: dict[str, Any], reply: dict[str, Any]) -> Answer:
    """Kratos's response for the hook ``body`` and the worker's ``reply``."""
    error = reply.get("error")
    if isinstance(error, dict):
        if error.get("code") == "bad_request":
            return Answer(400, _messages(str(error.get("message")), "bad_request"), "error")
        return unavailable(str(error.get("message")))
    if reply.get("decision") != "continue":
        return Answer(403, _messages(block_message(reply), reply.get("reason")), "block")
    identity = body.get("identity")
    updates = reply.get("user_updates") or {}
    metadata = reply.get("metadata") or []
    if not isinstance(identity, dict) or not (updates or metadata):
        return Answer(204)
    traits = dict(identity.get("traits") or {})
    for field, value in updates.items():
        if field in ("first_name", "last_name"):
            name = traits.get("name")
            name = dict(name) if isinstance(name, dict) else {}
            name["first" if field == "first_name" else "last"] = value
            traits["name"] = name
        elif field in _TRAITS or field in traits:
            traits[_TRAITS.get(field, field)] = value
    public = dict(identity.get("metadata_public") or {})
    for entry in metadata:
        if isinstance(entry, dict) and entry.get("key"):
            public[str(entry["key"])] = entry.get("value")
    return Answer(200, {"identity": {"traits": traits, "metadata_public": public}})


def unavailable(message: str) -> Answer:
    """No decision in time: 424 with the message in Kratos's format, shown at once (a 5xx
    would be retried twice and its message dropped; see the module). Kratos fails the flow
    unless the hook is configured to ignore its answer."""
    return Answer(UNDECIDED, _messages(message, "unavailable"), "error")


def refused(status: int, message: str) -> Answer:
    """A call the gateway refuses (a key it does not accept, a malformed body...): its 4xx,
    the reason in Kratos's format (Kratos shows only that, else "got no validation
    errors")."""
    return Answer(status, _messages(message, "refused"), "refused")
