"""ZITADEL Actions v2 executions (targets of type restCall / restWebhook) as trigger requests.

Shapes as ZITADEL sends them (internal/api/oidc/userinfo.go ``ContextInfo``,
internal/api/saml/storage.go, internal/api/grpc/server/connect_middleware/
execution_interceptor.go ``ContextInfoRequest``/``ContextInfoResponse``):

- function executions: ``{"function": "function/preuserinfo", "userinfo": {claims},
  "user": {query.User}, "user_metadata": [{"key", "value": <base64>}], "org": {...},
  "user_grants": [...], "application": {"client_id"}}``; answered with
  ``append_claims``, ``append_log_claims``, ``set_user_metadata``, ``append_attribute``;
- request/response executions: ``{"fullMethod", "instanceID", "orgID", "projectID",
  "userID", "request": {...}, "response": {...}, "headers": {...}}``; answered with the
  (changed) request message, or the response message;
- event executions: ``{"aggregateID", "event_type", "event_payload", ...}``, answered at once.

A reply that is not ``continue`` becomes HTTP 200 with ``forwardedStatusCode`` (4xx) and
``forwardedErrorMessage``, which ZITADEL forwards to its caller when the target interrupts on
error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any

from gatehook.domain.providers import Answer, Ask, Malformed, as_object, block_message
from gatehook.domain.targets import b64_value

__all__ = ["FUNCTIONS", "USER_CREATION", "answer", "ask", "is_event", "unavailable"]

FUNCTIONS: dict[str, tuple[str, str]] = {
    "function/preuserinfo": ("complement_token", "pre_userinfo_creation"),
    "function/preaccesstoken": ("complement_token", "pre_access_token_creation"),
    "function/presamlresponse": ("customize_saml_response", "pre_saml_response"),
}

# The methods that create a human user, v2 and v1 (request -> pre_creation, response ->
# post_creation of internal_authentication).
USER_CREATION = frozenset(
    {
        "/zitadel.user.v2.UserService/AddHumanUser",
        "/zitadel.user.v2.UserService/CreateUser",
        "/zitadel.user.v2beta.UserService/AddHumanUser",
        "/zitadel.management.v1.ManagementService/AddHumanUser",
        "/zitadel.management.v1.ManagementService/ImportHumanUser",
        "/zitadel.admin.v1.AdminService/ImportHumanUser",
    }
)
_V1_USER_METHODS = frozenset(m for m in USER_CREATION if ".v1." in m)
_LOG_CLAIM = re.compile(r"^urn:zitadel:iam:action:.+:log$")
_RESERVED = "urn:zitadel:iam"
_SAML_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _metadata_value(raw: Any) -> Any:
    """A ZITADEL metadata value (base64 bytes) as a script sees it: the decoded text, parsed
    when it is JSON (as ZITADEL's v1 ``getMetadata()`` gives it)."""
    if not isinstance(raw, str):
        return raw
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False).decode()
    except (binascii.Error, UnicodeDecodeError):
        return raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def _metadata(entries: Any) -> dict[str, Any]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise Malformed("user_metadata must be a list")
    out: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        key = entry.get("key", entry.get("Key"))  # (Go field names where a version has no tag)
        if isinstance(key, str):
            out[key] = _metadata_value(entry.get("value", entry.get("Value")))
    return out


_GRANT_NAMES = {
    "grant_id": "projectGrantId",
    "resource_owner": "userGrantResourceOwner",
    "org_name": "userGrantResourceOwnerName",
}


_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    """``ProjectID`` -> ``project_id`` (a Go field without a JSON tag), ``project_id`` kept."""
    return name if "_" in name or name.islower() else _WORD.sub("_", name).lower()


def _grants(entries: Any) -> list[dict[str, Any]]:
    """ZITADEL's user grants with the v1 script names (``projectId``, ``roles``, ...), from
    snake_case keys or the Go field names of versions that send those (``ProjectID``)."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise Malformed("user_grants must be a list")
    out = []
    for grant in entries:
        if isinstance(grant, dict):
            names = {str(k): _snake(str(k)) for k in grant}
            out.append({_GRANT_NAMES.get(names[k], _camel(names[k])): v for k, v in grant.items()})
    return out


def _user(raw: dict[str, Any], metadata: dict[str, Any], grants: list[Any]) -> dict[str, Any]:
    """The trigger request's ``user`` from ZITADEL's ``query.User``: gatehook's fields
    (``email``, ``first_name``, ...) for module scripts, ZITADEL's v1 names (``human``
    with ``firstName``, ``preferredLoginName``, ...) for ZITADEL scripts."""
    human = as_object(raw.get("human"), "user.human")
    user: dict[str, Any] = {
        "id": raw.get("id"),
        "username": raw.get("username") or raw.get("preferred_login_name"),
        "email": human.get("email"),
        "email_verified": bool(human.get("is_email_verified")) if human else None,
        "metadata": metadata,
        "grants": grants,
    }
    for name in ("first_name", "last_name", "nick_name", "display_name", "phone", "gender"):
        if human.get(name) not in (None, ""):
            user[name] = human[name]
    if human.get("preferred_language"):
        user["preferred_language"] = human["preferred_language"]
    if human:
        user["phone_verified"] = bool(human.get("is_phone_verified"))
        user["human"] = {_camel(k): v for k, v in human.items()} | {
            "isEmailVerified": bool(human.get("is_email_verified")),
            "isPhoneVerified": bool(human.get("is_phone_verified")),
        }
    machine = raw.get("machine")
    if isinstance(machine, dict):
        user["machine"] = {_camel(k): v for k, v in machine.items() if k != "encoded_hash"}
    for name in ("preferred_login_name", "login_names", "resource_owner", "state", "type"):
        if raw.get(name) is not None:
            user[_camel(name)] = raw[name]
    return {k: v for k, v in user.items() if v is not None}


def is_event(body: dict[str, Any]) -> bool:
    """Whether ``body`` is an event execution's (answered at once, kept in the audit)."""
    return "event_type" in body and "function" not in body and "fullMethod" not in body


def ask(body: dict[str, Any]) -> Ask:
    """The trigger request for a function or request/response execution's ``body``."""
    function = body.get("function")
    if isinstance(function, str):
        return _function_ask(function, body)
    method = body.get("fullMethod")
    if isinstance(method, str):
        return _method_ask(method, body)
    raise Malformed("neither a function execution (function) nor a request/response (fullMethod)")


def _function_ask(function: str, body: dict[str, Any]) -> Ask:
    slot = FUNCTIONS.get(function)
    if slot is None:
        raise Malformed(f"function {function!r} is not mapped (known: {', '.join(FUNCTIONS)})")
    userinfo = as_object(body.get("userinfo"), "userinfo")
    user = _user(
        as_object(body.get("user"), "user"),
        _metadata(body.get("user_metadata")),
        _grants(body.get("user_grants")),
    )
    if not user.get("id") and isinstance(userinfo.get("sub"), str):
        user["id"] = userinfo["sub"]
    if "email" not in user and isinstance(userinfo.get("email"), str):
        user["email"] = userinfo["email"]
    application = as_object(body.get("application"), "application")
    context: dict[str, Any] = {
        "claims": userinfo,
        "userinfo": userinfo,
        "org": as_object(body.get("org"), "org"),
        "application": application,
        "zitadel": {"function": function},
    }
    if body.get("actor") is not None:
        context["actor"] = body["actor"]
    request: dict[str, Any] = {}
    if isinstance(application.get("client_id"), str):
        request["application_id"] = application["client_id"]
    return Ask(
        *slot,
        {"request_id": uuid.uuid4().hex, "user": user, "request": request, "context": context},
    )


def _first(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if obj.get(name) not in (None, ""):
            return obj[name]
    return None


def _method_ask(method: str, body: dict[str, Any]) -> Ask:
    if method not in USER_CREATION:
        raise Malformed(
            f"method {method} is not mapped (user creation is: {', '.join(sorted(USER_CREATION))})"
        )
    message = as_object(body.get("request"), "request")
    response = body.get("response")
    human = as_object(message.get("human"), "request.human")  # (CreateUser nests it)
    profile = as_object(message.get("profile") or human.get("profile"), "profile")
    email = message.get("email")
    email = as_object(email, "email") if not isinstance(email, str) else {"email": email}
    entries = message.get("metadata")
    metadata = {
        m["key"]: _metadata_value(m.get("value"))
        for m in (entries if isinstance(entries, list) else [])
        if isinstance(m, dict) and isinstance(m.get("key"), str)
    }
    user: dict[str, Any] = {
        "id": _first(message, "userId") or body.get("userID") or None,
        "username": _first(message, "username", "userName"),
        "email": email.get("email"),
        "email_verified": _first(email, "isVerified", "isEmailVerified"),
        "first_name": _first(profile, "givenName", "firstName"),
        "last_name": _first(profile, "familyName", "lastName"),
        "display_name": profile.get("displayName"),
        "metadata": metadata,
    }
    if isinstance(response, dict) and isinstance(response.get("userId"), str):
        user["id"] = response["userId"]
    headers = as_object(body.get("headers"), "headers")
    forwarded = headers.get("X-Forwarded-For") or headers.get("x-forwarded-for")
    request: dict[str, Any] = {}
    if isinstance(forwarded, list) and forwarded:
        request["ip"] = str(forwarded[0]).split(",")[0].strip()
    context = {
        "zitadel": {
            k: body.get(k)
            for k in ("fullMethod", "instanceID", "orgID", "projectID", "userID")
            if body.get(k) is not None
        },
        "zitadel_request": message,
    }
    trigger = "post_creation" if response is not None else "pre_creation"
    return Ask(
        "internal_authentication",
        trigger,
        {
            "request_id": uuid.uuid4().hex,
            "user": {k: v for k, v in user.items() if v is not None},
            "request": request,
            "context": context,
        },
    )


def _refused(reply: dict[str, Any]) -> Answer:
    return Answer(
        200,
        {"forwardedStatusCode": 403, "forwardedErrorMessage": block_message(reply)},
        "block",
    )


def answer(body: dict[str, Any], reply: dict[str, Any]) -> Answer:
    """ZITADEL's response for the execution ``body`` and the worker's ``reply``."""
    error = reply.get("error")
    if isinstance(error, dict):
        if error.get("code") == "bad_request":
            forwarded = {"forwardedStatusCode": 400, "forwardedErrorMessage": error.get("message")}
            return Answer(200, forwarded, "error")
        return unavailable(str(error.get("message")))
    if reply.get("decision") != "continue":
        return _refused(reply)
    if isinstance(body.get("function"), str):
        return Answer(200, _function_response(reply))
    if body.get("response") is not None:
        return Answer(200, body["response"])  # post_creation: the response unchanged
    return Answer(200, _changed_request(str(body.get("fullMethod")), body, reply))


def _function_response(reply: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    claims: list[dict[str, Any]] = []
    logs: list[str] = []
    for key, value in (reply.get("claims") or {}).items():
        if _LOG_CLAIM.match(key):
            logs.extend(str(v) for v in (value if isinstance(value, list) else [value]))
        elif not key.startswith(_RESERVED):
            claims.append({"key": key, "value": value})
    if claims:
        out["append_claims"] = claims
    if logs:
        out["append_log_claims"] = logs
    metadata = [
        {"key": m["key"], "value": b64_value(m.get("value"))}
        for m in reply.get("metadata") or []
        if isinstance(m, dict) and m.get("key")
    ]
    if metadata:
        out["set_user_metadata"] = metadata
    attributes = [
        {"name": name, "name_format": _SAML_BASIC, "value": [str(v) for v in values]}
        for name, values in (reply.get("saml_attributes") or {}).items()
    ]
    if attributes:
        out["append_attribute"] = attributes
    return out


_V2_FIELDS = {
    "first_name": ("profile", "givenName"),
    "last_name": ("profile", "familyName"),
    "nick_name": ("profile", "nickName"),
    "display_name": ("profile", "displayName"),
    "preferred_language": ("profile", "preferredLanguage"),
    "gender": ("profile", "gender"),
    "email": ("email", "email"),
    "email_verified": ("email", "isVerified"),
    "phone": ("phone", "phone"),
    "phone_verified": ("phone", "isVerified"),
    "username": (None, "username"),
}
_V1_FIELDS = _V2_FIELDS | {
    "first_name": ("profile", "firstName"),
    "last_name": ("profile", "lastName"),
    "email_verified": ("email", "isEmailVerified"),
    "phone_verified": ("phone", "isPhoneVerified"),
    "username": (None, "userName"),
}


def _changed_request(method: str, body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """The request message with the reply's user updates (and, v2, metadata) applied."""
    message: dict[str, Any] = json.loads(json.dumps(body.get("request") or {}))  # a copy
    fields = _V1_FIELDS if method in _V1_USER_METHODS else _V2_FIELDS
    for name, value in (reply.get("user_updates") or {}).items():
        where = fields.get(name)
        if where is None:
            continue
        part, key = where
        if part is None:
            message[key] = value
        else:
            target = message.get(part)
            if not isinstance(target, dict):
                target = message[part] = {}
            target[key] = value
    metadata = reply.get("metadata") or []
    if metadata and method not in _V1_USER_METHODS:
        entries = message.get("metadata")
        if not isinstance(entries, list):
            entries = message["metadata"] = []
        for m in metadata:
            if isinstance(m, dict) and m.get("key"):
                entries.append({"key": m["key"], "value": b64_value(m.get("value"))})
    return message


def unavailable(message: str) -> Answer:
    """No decision in time: a non-2xx status, which ZITADEL treats as the target failing
    (its interruptOnError decides whether the user's call fails)."""
    return Answer(503, {"error": message}, "error")
