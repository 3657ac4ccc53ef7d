"""docs/contract.md: no change without its audit event. Every operation of the management
API, driven over NATS against a real worker: an operation that changes state writes its audit
events, and when the audit stream refuses them (for real: the stream's message size limit
set below an event's) the change is undone and the caller told ``unavailable``; an operation
that reads changes nothing and writes no event."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.admin.requests import OPERATIONS
from gatehook.errors import TransportError
from gatehook.storage import MongoStore
from tests.support.tenants import audit_events, request, tenant_state
from tests.support.workers import Worker

PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}
PC = {"flow_type": "internal_authentication", "trigger": "pre_creation"}


def claim(n: int) -> str:
    return f"export function execute() {{ return {{kind: 'continue', claims: {{v: {n}}}}}; }}"


def file_with(domains: list[str], ingress: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "actions": [
            {"name": "gate", "template": "domain-allowlist", "config": {"domains": domains}}
        ],
        "flows": {"internal_authentication": {"pre_creation": ["gate@latest"]}},
    }
    if ingress:
        doc["ingress"] = {"kratos": {"api_keys": ["kratos-key-0123456789"]}}
    return doc


# The operations that change state, in an order where each finds what it needs, with the
# event types each must write.
CHANGES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("actions.create", {"name": "a"}, {"admin.action_created"}),
    ("actions.publish", {"name": "a", "source": claim(1)}, {"flow.action_published"}),
    ("actions.publish", {"name": "a", "source": claim(2)}, {"flow.action_published"}),
    ("actions.create", {"name": "b"}, {"admin.action_created"}),
    (
        "actions.update",
        {"name": "b", "display_name": "B", "triggers": ["post_authentication", "pre_creation"]},
        {"admin.action_updated"},
    ),
    ("actions.publish", {"name": "b", "source": claim(3)}, {"flow.action_published"}),
    ("flows.attach", {"action": "a", "version": "1.0.0", **PA}, {"flow.action_attached"}),
    ("flows.attach", {"action": "b", **PA}, {"flow.action_attached"}),
    ("flows.update", {"action": "a", "version": "1.0.1", **PA}, {"flow.action_updated"}),
    ("flows.reorder", {"order": ["b", "a"], **PA}, {"flow.action_updated"}),
    ("flows.detach", {"action": "b", **PA}, {"flow.action_detached"}),
    (  # two slots in one revision: a pinned back, b added at another trigger
        "flows.set",
        {
            "flow_type": PA["flow_type"],
            "slots": {
                PA["trigger"]: [{"action": "a", "version": "1.0.0"}],
                "pre_creation": [{"action": "b", "version": "1.0.0"}],
            },
            "revision": 5,  # after the five changes above
        },
        {"flow.action_updated", "flow.action_attached"},
    ),
    ("flows.rollback", {"flow_type": PA["flow_type"], "revision": 2}, {"flow.action_attached"}),
    (
        "rollouts.start",
        {"action": "a", "canary": "1.0.1", "percent": 10, **PA},
        {"flow.rollout_started"},
    ),
    ("rollouts.abort", {"action": "a", **PA}, {"flow.rollout_rolled_back"}),
    ("rollouts.start", {"action": "a", "shadow": "1.0.1", **PA}, {"flow.rollout_started"}),
    ("rollouts.promote", {"action": "a", **PA}, set()),  # a shadow alone: refused, see below
    ("actions.disable", {"name": "a", "reason": "incident"}, {"flow.action_disabled"}),
    ("actions.enable", {"name": "a", "reason": "fixed"}, {"flow.action_enabled"}),
    ("recordings.set", {**PA, "redact": ["user.email"]}, {"flow.recording_changed"}),
    ("recordings.set", {**PA, "enabled": False}, {"flow.recording_changed"}),
    (
        "apply",
        {"file": file_with(["acme.com"])},
        {"admin.action_created", "flow.action_published", "flow.action_attached"},
    ),
    ("apply", {"file": file_with(["acme.org"], ingress=True)}, set()),  # several writes
]
# what the several-write applies must write at least
APPLY_WITH_INGRESS = {"flow.action_published", "flow.action_updated", "ingress.updated"}

# The operations that read (and ``console.audit``, which records an event of the console's
# and writes nothing else; only the console's user may call it: tests/e2e/test_permissions).
READS: list[tuple[str, dict[str, Any]]] = [
    ("actions.list", {}),
    ("actions.show", {"name": "a"}),
    ("actions.test", {"name": "a", "request": request(), **PA}),
    ("templates.list", {}),
    ("templates.show", {"name": "domain-allowlist"}),
    ("flows.show", {"flow_type": PA["flow_type"]}),
    ("flows.history", {"flow_type": PA["flow_type"]}),
    ("rollouts.status", {}),
    ("replay", {"with": "a@1.0.0", **PA}),
    ("ingress.show", {}),
]
RECORDS_ONLY = {"console.audit"}


def test_every_operation_is_listed_here() -> None:
    """An operation added to the API without a line here fails this test: say whether it
    changes state (and with which events) or reads."""
    listed = {op for op, _, _ in CHANGES} | {op for op, _ in READS} | RECORDS_ONLY
    assert listed == set(OPERATIONS)


async def _refuse_audit(nc: NATS, stream: str, refuse: bool) -> None:
    """Make the audit stream refuse every event (its largest message smaller than any event),
    or accept them again."""
    js = nc.jetstream()
    config = (await js.stream_info(stream)).config
    await js.update_stream(dataclasses.replace(config, max_msg_size=16 if refuse else -1))


async def test_every_change_is_audited_or_undone(
    worker: Worker, nc: NATS, store: MongoStore, tenant: str
) -> None:
    api = AdminClient(nc, actor="alice", timeout=60)
    stream = worker.runtime.settings.audit.stream
    for op, body, types in CHANGES:
        before = await tenant_state(store, tenant)
        seen = len(await audit_events(nc, tenant))
        if op == "rollouts.promote":  # a shadow has no canary to promote: refused, unchanged
            with pytest.raises(Exception, match="no canary"):
                await api.call(tenant, op, **body)
            assert await tenant_state(store, tenant) == before
            continue
        await _refuse_audit(nc, stream, True)
        try:
            with pytest.raises(TransportError):
                await api.call(tenant, op, **body)
            assert await tenant_state(store, tenant) == before, f"{op} left its change behind"
        finally:
            await _refuse_audit(nc, stream, False)
        assert len(await audit_events(nc, tenant)) == seen
        await api.call(tenant, op, **body)
        assert await tenant_state(store, tenant) != before, f"{op} changed nothing"
        written = {e["type"] for e in (await audit_events(nc, tenant))[seen:]}
        assert written, f"{op} changed state without an audit event"
        assert written >= (types or APPLY_WITH_INGRESS), (op, written)
    for op, body in READS:
        before = await tenant_state(store, tenant)
        seen = len(await audit_events(nc, tenant))
        await api.call(tenant, op, **body)
        assert await tenant_state(store, tenant) == before, f"{op} changed state"
        assert len(await audit_events(nc, tenant)) == seen, f"{op} wrote an event"
