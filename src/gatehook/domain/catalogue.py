"""The catalogue of flow types and their triggers, and the names the contract allows."""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = [
    "ACTION_NAME_RE",
    "TENANT_RE",
    "TRIGGERS",
    "FlowType",
    "Trigger",
    "all_slots",
    "is_valid_slot",
    "slot_problem",
    "tenant_problem",
]

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ACTION_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


class FlowType(StrEnum):
    """The flow types a tenant can configure."""

    EXTERNAL_AUTHENTICATION = "external_authentication"
    INTERNAL_AUTHENTICATION = "internal_authentication"
    COMPLEMENT_TOKEN = "complement_token"
    CUSTOMIZE_SAML_RESPONSE = "customize_saml_response"


class Trigger(StrEnum):
    """The trigger points (slots) of the flows."""

    POST_AUTHENTICATION = "post_authentication"
    PRE_CREATION = "pre_creation"
    POST_CREATION = "post_creation"
    PRE_USERINFO_CREATION = "pre_userinfo_creation"
    PRE_ACCESS_TOKEN_CREATION = "pre_access_token_creation"
    PRE_SAML_RESPONSE = "pre_saml_response"


_AUTH = (Trigger.POST_AUTHENTICATION, Trigger.PRE_CREATION, Trigger.POST_CREATION)

TRIGGERS: dict[FlowType, tuple[Trigger, ...]] = {
    FlowType.EXTERNAL_AUTHENTICATION: _AUTH,
    FlowType.INTERNAL_AUTHENTICATION: _AUTH,
    FlowType.COMPLEMENT_TOKEN: (Trigger.PRE_USERINFO_CREATION, Trigger.PRE_ACCESS_TOKEN_CREATION),
    FlowType.CUSTOMIZE_SAML_RESPONSE: (Trigger.PRE_SAML_RESPONSE,),
}


# (flow type, trigger) names -> members: a dict lookup, not two Enum calls per request
_SLOTS: dict[tuple[str, str], tuple[FlowType, Trigger]] = {
    (ft.value, tr.value): (ft, tr) for ft, triggers in TRIGGERS.items() for tr in triggers
}
_FLOW_TYPES = frozenset(f.value for f in FlowType)
_TRIGGER_NAMES = frozenset(t.value for t in Trigger)


def is_valid_slot(flow_type: str, trigger: str) -> bool:
    """Whether ``trigger`` is a trigger of ``flow_type`` in the catalogue."""
    return (flow_type, trigger) in _SLOTS


def tenant_problem(tenant: str) -> str | None:
    """What is wrong with ``tenant`` as a tenant's slug, or None: the one wording of it
    for the worker, the management API, the gateway and the importers."""
    if TENANT_RE.fullmatch(tenant):
        return None
    return f"tenant {tenant[:64]!r} is not a tenant slug (a-z, 0-9 and -, at most 63)"


def slot_problem(flow_type: str, trigger: str) -> tuple[str, str] | None:
    """(the field at fault, what is wrong) with a slot's names, or None when the catalogue
    has it: the one wording of it wherever a slot is named."""
    if (flow_type, trigger) in _SLOTS:
        return None
    flow_type, trigger = flow_type[:64], trigger[:64]  # (said back: bounded)
    field, why = "trigger", f"{flow_type} has no trigger {trigger!r}"
    if flow_type not in _FLOW_TYPES:
        field, why = "flow_type", f"unknown flow type {flow_type!r}"
    elif trigger not in _TRIGGER_NAMES:
        why = f"unknown trigger {trigger!r}"
    return (
        field,
        f"{flow_type}.{trigger} is not a trigger of the catalogue ({why}; see docs/contract.md)",
    )


def slot_of(flow_type: str, trigger: str) -> tuple[FlowType, Trigger] | None:
    """The catalogue's members for a slot's names, or None when it is not in the catalogue."""
    return _SLOTS.get((flow_type, trigger))


def all_slots() -> list[tuple[FlowType, Trigger]]:
    """Every (flow type, trigger) pair of the catalogue, in catalogue order."""
    return [(ft, tr) for ft, triggers in TRIGGERS.items() for tr in triggers]
