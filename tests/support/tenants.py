"""Helpers shared by the tests: drive the worker over NATS as a login service would."""

from __future__ import annotations

import json
import uuid
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from gatehook.admin.service import AdminService, Draft
from gatehook.audit.reader import events_of, subject_filter
from gatehook.domain.model import Attachment
from gatehook.storage import MongoStore

__all__ = [
    "attach",
    "audit_events",
    "custom",
    "request",
    "template",
    "tenant_state",
    "trigger",
]


def request(**fields: Any) -> dict[str, Any]:
    """A trigger request with a fresh request_id and a typical user."""
    body: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "user": {"id": "u1", "username": "ann", "email": "ann@acme.com", "groups": ["staff"]},
        "request": {"ip": "203.0.113.7", "risk_score": 0.1},
    }
    body.update(fields)
    return body


async def trigger(
    nc: NATS,
    tenant: str,
    body: dict[str, Any] | bytes,
    flow_type: str = "external_authentication",
    trigger_name: str = "post_authentication",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Send one trigger request; return the parsed reply."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    msg = await nc.request(
        f"gatehook.v1.trigger.{tenant}.{flow_type}.{trigger_name}", payload, timeout=timeout
    )
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


async def custom(
    admin: AdminService,
    tenant: str,
    name: str,
    source: str,
    *,
    language: str = "js",
    **options: Any,
) -> str:
    """Create (if needed) and publish a custom action; return its version."""
    if await admin.store.get_action(tenant, name) is None:
        await admin.create_action(tenant, name)
    draft = Draft(source=source, language=language, **options)  # type: ignore[arg-type]
    version, _ = await admin.publish(tenant, name, draft, actor="test")
    return version.version


async def template(
    admin: AdminService,
    tenant: str,
    name: str,
    template_name: str,
    config: dict[str, Any],
    **options: Any,
) -> str:
    """Create (if needed) and publish a template action; return its version."""
    if await admin.store.get_action(tenant, name) is None:
        await admin.create_action(tenant, name, template=template_name)
    version, _ = await admin.publish(tenant, name, Draft(config=config, **options), actor="test")
    return version.version


async def attach(
    admin: AdminService,
    tenant: str,
    refs: list[tuple[str, str]],
    flow_type: str = "external_authentication",
    trigger_name: str = "post_authentication",
) -> int:
    """Make ``refs`` the slot's list; return the new revision."""
    flow = await admin.set_slot(
        tenant,
        flow_type,
        trigger_name,
        [Attachment(action=a, version=v) for a, v in refs],
        actor="test",
    )
    assert flow is not None
    return flow.revision


async def audit_events(nc: NATS, tenant: str, type_: str = "*") -> list[dict[str, Any]]:
    """Every audit event of ``tenant`` in the stream now (an ordered, ephemeral read), a
    decision record read as its ``flow.action_executed`` events, as gatehook's readers read
    it."""
    js = nc.jetstream()
    subject = subject_filter(tenant, None if type_ == "*" else type_)
    info = await js.stream_info("GATEHOOK_AUDIT", subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    if total == 0:
        return []
    sub = await js.subscribe(
        subject, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    events = []
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=5)
            for event in events_of(msg.data, None if type_ == "*" else type_):
                events.append(json.loads(event.model_dump_json()))
    finally:
        await sub.unsubscribe()
    return events


def _pruned(value: Any) -> Any:
    """``value`` without empty lists, objects and None (an upserted tenant document that
    holds nothing, or a list emptied again, is no change of state)."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


async def tenant_state(store: MongoStore, tenant: str) -> dict[str, Any]:
    """Every document the store holds for ``tenant`` (its actions, versions, flows, tenant
    document and ingress; not its sign-in pins, which serving writes), for comparing the
    state before and after an operation."""
    state: dict[str, Any] = {}
    for kind in ("tenants", "actions", "versions", "flows"):
        found = (
            await store.bucket(kind, tenant).find({"_id": {"$regex": f"^{tenant}(/|$)"}}).to_list()
        )
        docs = {str(d["_id"]): _pruned(d) for d in found}
        state[kind] = {k: v for k, v in docs.items() if set(v) != {"_id"}}
    ingress = await store.ingress.find_one({"_id": tenant})
    state["ingress"] = _pruned(ingress) if ingress else None
    return state
