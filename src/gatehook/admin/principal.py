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
    "CLAIMED",
    "PRINCIPAL",
    "acting",
]

# the authenticated caller of the management request being handled (None: not known), and
# the actor it claimed when that is not what is recorded
PRINCIPAL: ContextVar[str | None] = ContextVar("gatehook_principal", default=None)
CLAIMED: ContextVar[str | None] = ContextVar("gatehook_claimed_actor", default=None)


def acting(principal: str | None, claimed: str, trusted: frozenset[str]) -> tuple[str, str | None]:
    """(the actor to record, the claimed actor to record beside it, or None)."""
    if principal is None or principal in trusted:
        return claimed, None
    return principal, (claimed if claimed != principal else None)
