"""Every NATS subject gatehook speaks (docs/contract.md, "Subjects"), spelled here once.

Pure functions and constants, no I/O: the client, the worker, the gateway, the CLI, the dev
run and the AsyncAPI document build and read subjects through this module and never by
hand, so a subject cannot drift between its publisher and its subscriber.

Each subject has a *form* (the documented shape, ``{name}`` for each token a caller fills),
a builder (the concrete subject) and, where gatehook subscribes, a *pattern* (the
wildcards it subscribes with).
"""

from __future__ import annotations

from gatehook.domain.contract import DECIDED

__all__ = [
    "ADMIN",
    "ADMIN_FORM",
    "AS_ADMIN",
    "AS_ADMIN_FORM",
    "AUDIT",
    "AUDIT_FORM",
    "AUDIT_PREFIX",
    "CHANGES",
    "CHANGES_FORM",
    "DECIDED_FORM",
    "HEALTH",
    "INGRESS",
    "INGRESS_FORM",
    "RECORDINGS",
    "TRIGGERS",
    "TRIGGER_FORM",
    "admin",
    "admin_parts",
    "as_admin",
    "audit",
    "audit_filter",
    "changes",
    "decided",
    "ingress",
    "ingress_parts",
    "lane_audit_prefix",
    "recording",
    "said",
    "trigger",
    "trigger_parts",
]

_V1 = "gatehook.v1"

TRIGGER_FORM = f"{_V1}.trigger.{{tenant}}.{{flow_type}}.{{trigger}}"
TRIGGERS = f"{_V1}.trigger.*.*.*"  # request-reply, the workers' queue group

CHANGES_FORM = f"{_V1}.changes.{{tenant}}"
CHANGES = f"{_V1}.changes.*"  # broadcast: every worker

ADMIN_FORM = f"{_V1}.admin.{{tenant}}.{{operation}}"
ADMIN = f"{_V1}.admin.*.>"
# a management request sent as an authenticated NATS user, who is named in the subject
AS_ADMIN_FORM = f"{_V1}.as.{{principal}}.admin.{{tenant}}.{{operation}}"
AS_ADMIN = f"{_V1}.as.*.admin.*.>"

INGRESS_FORM = f"{_V1}.ingress.{{tenant}}.{{operation}}"
INGRESS = f"{_V1}.ingress.*.*"

HEALTH = f"{_V1}.health"  # the NATS micro service's health endpoint

AUDIT_PREFIX = f"{_V1}.audit."
AUDIT_FORM = AUDIT_PREFIX + "{tenant}.{event}"
AUDIT = AUDIT_PREFIX + ">"  # the audit stream's subjects
DECIDED_FORM = AUDIT_PREFIX + "{tenant}." + DECIDED

RECORDINGS = f"{_V1}.recordings.>"


def said(form: str) -> str:
    """A form as an error message says it: ``gatehook.v1.trigger.<tenant>...``."""
    return form.replace("{", "<").replace("}", ">")


def trigger(tenant: str, flow_type: str, trigger: str) -> str:
    """The subject a login service sends a trigger request to."""
    return f"{_V1}.trigger.{tenant}.{flow_type}.{trigger}"


def trigger_parts(subject: str) -> tuple[str, str, str] | None:
    """(tenant, flow type, trigger) of a trigger subject, or None when it is not one."""
    parts = subject.split(".")
    if len(parts) != 6:
        return None
    return parts[3], parts[4], parts[5]


def changes(tenant: str) -> str:
    """The broadcast that tells every worker ``tenant``'s flows changed."""
    return f"{_V1}.changes.{tenant}"


def admin(tenant: str, operation: str) -> str:
    """The subject of one management operation."""
    return f"{_V1}.admin.{tenant}.{operation}"


def as_admin(principal: str, tenant: str, operation: str) -> str:
    """The subject of one management operation sent as ``principal``."""
    return f"{_V1}.as.{principal}.admin.{tenant}.{operation}"


def admin_parts(subject: str) -> tuple[str | None, list[str]]:
    """(the principal named in the subject or None, the parts of the subject as
    ``gatehook.v1.admin.<tenant>.<operation...>``)."""
    parts = subject.split(".")
    if len(parts) >= 6 and parts[:3] == ["gatehook", "v1", "as"] and parts[4] == "admin":
        return parts[3], ["gatehook", "v1", "admin", *parts[5:]]
    return None, parts


def ingress(tenant: str, operation: str) -> str:
    """The subject of one gateway request about ``tenant``."""
    return f"{_V1}.ingress.{tenant}.{operation}"


def ingress_parts(subject: str) -> tuple[str, str] | None:
    """(tenant, operation) of an ingress subject, or None when it is not one."""
    parts = subject.split(".")
    return (parts[3], parts[4]) if len(parts) == 5 else None


def audit(tenant: str, event_type: str) -> str:
    """Where an audit event of ``tenant`` is stored (``gatehook.v1.audit.<tenant>.<type>``)."""
    return f"{AUDIT_PREFIX}{tenant}.{event_type}"


def decided(tenant: str) -> str:
    """The subject of ``tenant``'s decision records."""
    return audit(tenant, DECIDED)


def audit_filter(tenant: str | None, event_type: str | None) -> str:
    """The audit subjects of a tenant and an event type, either of them all when None; an
    event type that ends in ``.>`` keeps its wildcard (``flow.>``)."""
    return f"{AUDIT_PREFIX}{tenant or '*'}.{event_type or '>'}"


def lane_audit_prefix(lane: int, lanes: int) -> str:
    """The subject prefix of write lane ``lane``'s decision records, ``<tenant>.<event>``
    to follow: the audit subjects themselves with one lane; a prefix of the lane's own,
    sourced into the audit stream, with more."""
    return AUDIT_PREFIX if lanes == 1 else f"{_V1}.lane.{lane}.audit."


def recording(tenant: str, slot: str) -> str:
    """Where a slot's recorded inputs are kept, for replays."""
    return f"{_V1}.recordings.{tenant}.{slot}"
