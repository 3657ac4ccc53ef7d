"""Who is calling the management API, as the NATS server authenticated it.

A request on ``gatehook.v1.as.<principal>.admin.<tenant>.<operation>`` names its caller in a
subject segment that the caller's NATS permissions pin (deploy/nats.conf: acme's operator may
publish ``gatehook.v1.as.acme-operator.admin.acme.>`` only), so the name cannot be claimed by
another user. The ``actor`` in the body is what the caller says; only principals trusted to
speak for others (the console, for the operator signed in to it) have it recorded as the
actor. Everyone else is recorded as themselves, with what they claimed beside it. Requests
on the plain ``gatehook.v1.admin.<tenant>.<operation>`` carry no authenticated name.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = [
    "AS_ADMIN_SUBJECT",
    "CLAIMED",
    "PRINCIPAL",
    "acting",
    "as_admin_subject",
    "split_principal",
]

AS_ADMIN_SUBJECT = "gatehook.v1.as.*.admin.*.>"
# the authenticated caller of the management request being handled (None: not known), and
# the actor it claimed when that is not what is recorded
PRINCIPAL: ContextVar[str | None] = ContextVar("gatehook_principal", default=None)
CLAIMED: ContextVar[str | None] = ContextVar("gatehook_claimed_actor", default=None)


def as_admin_subject(principal: str, tenant: str, operation: str) -> str:
    """The subject of one management operation sent as ``principal``."""
    return f"gatehook.v1.as.{principal}.admin.{tenant}.{operation}"


def split_principal(subject: str) -> tuple[str | None, list[str]]:
    """(the principal, the subject's parts as ``gatehook.v1.admin.<tenant>.<operation>``)."""
    parts = subject.split(".")
    if len(parts) >= 6 and parts[:3] == ["gatehook", "v1", "as"] and parts[4] == "admin":
        return parts[3], ["gatehook", "v1", "admin", *parts[5:]]
    return None, parts


def acting(principal: str | None, claimed: str, trusted: frozenset[str]) -> tuple[str, str | None]:
    """(the actor to record, the claimed actor to record beside it, or None)."""
    if principal is None or principal in trusted:
        return claimed, None
    return principal, (claimed if claimed != principal else None)
