"""What identity providers send to their hooks, as trigger requests, and the replies as
the providers' response formats (the pure part of the ``gatehook http`` gateway).

Each provider module maps one call to the ``Ask`` (or asks) it needs and the replies back to
an ``Answer``; malformed calls raise ``Malformed`` (the gateway answers 400).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACTION_FAILED", "Answer", "Ask", "Malformed", "as_object", "block_message"]


class Malformed(ValueError):
    """The provider's call is not of the shape its documentation gives."""


@dataclass(frozen=True, slots=True)
class Ask:
    """One trigger request to send: the slot and the request body."""

    flow_type: str
    trigger: str
    request: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """The provider's response: HTTP status and JSON body (``None``: no body)."""

    status: int
    body: Any = None
    outcome: str = "continue"  # for metrics and the log: continue | block | error | event
    headers: dict[str, str] = field(default_factory=dict)


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object (or absent: ``{}``); ``Malformed`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{what} must be an object")
    return value


#: What an end user reads when an action failed (its error stays in the audit and the log).
ACTION_FAILED = "sign-in refused: a sign-in check could not be completed"


def block_message(reply: dict[str, Any]) -> str:
    """The text a provider shows its user for a reply that is not ``continue``: the
    action's own message, never a failed script's internals (``reason: action_error``'s
    message is the script's error, for the audit and the login service's log)."""
    decision = reply.get("decision")
    if reply.get("reason") == "action_error":
        return ACTION_FAILED
    message = reply.get("message") or reply.get("reason") or "refused by a sign-in action"
    if decision == "demand_mfa":
        return f"multi-factor authentication required: {message}"
    if decision == "redirect":
        return f"redirect required ({reply.get('redirect_url')}): {message}"
    return str(message)
