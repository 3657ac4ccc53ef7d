"""A custom action's own metadata: display name, description, compatible slots and a config
schema whose values are validated on publish and reach the script as ``input.config``; the
same through flows as code."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.errors import ValidationFailed
from tests.support.tenants import audit_events, request, trigger
from tests.support.workers import Worker

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "domains": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "strict": {"type": "boolean", "default": True},
        "limit": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
    },
    "required": ["domains"],
}
SOURCE = (
    "export async function execute(input: any) {\n"
    "  const d = (input.user.email || '').split('@')[1];\n"
    "  if (!input.config.domains.includes(d)) return {kind: 'block', reason: 'domain'};\n"
    "  return {kind: 'continue', claims: {strict: input.config.strict, limit: input.config.limit}};\n"
    "}"
)
EA = "external_authentication"


async def test_metadata_config_schema_and_compatible_slots(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    api = AdminClient(nc, actor="alice", timeout=60)
    with pytest.raises(ValidationFailed, match="not supported: pattern"):
        await api.call(
            tenant,
            "actions.create",
            name="bad",
            config_schema={
                "type": "object",
                "properties": {"x": {"type": "string", "pattern": "a"}},
            },
        )
    with pytest.raises(ValidationFailed, match="not a slot"):
        await api.call(
            tenant, "actions.create", name="bad", triggers=[f"{EA}.pre_userinfo_creation"]
        )
    made = await api.call(
        tenant,
        "actions.create",
        name="domains",
        display_name="Company domains only",
        description="Blocks sign-ins from addresses outside the configured domains.",
        triggers=[f"{EA}.post_authentication", f"{EA}.pre_creation"],
        config_schema=SCHEMA,
    )
    assert made["slots"] == [f"{EA}.post_authentication", f"{EA}.pre_creation"]
    assert made["triggers"] == ["post_authentication", "pre_creation"]
    assert (made["display_name"], made["config_schema"]) == ("Company domains only", SCHEMA)

    with pytest.raises(ValidationFailed, match="domains: is required"):
        await api.call(tenant, "actions.publish", name="domains", source=SOURCE, language="ts")
    with pytest.raises(ValidationFailed, match="limit: must be at most 10"):
        await api.call(
            tenant,
            "actions.publish",
            name="domains",
            source=SOURCE,
            language="ts",
            config={"domains": ["acme.com"], "limit": 11},
        )
    with pytest.raises(ValidationFailed, match="unknown field: extra"):
        await api.call(
            tenant,
            "actions.publish",
            name="domains",
            source=SOURCE,
            language="ts",
            config={"domains": ["acme.com"], "extra": 1},
        )
    # an unsaved draft runs as its publish would make it (config checked, defaults in)
    tried = await api.call(
        tenant,
        "actions.test",
        name="domains",
        draft={"source": SOURCE, "language": "ts", "config": {"domains": ["acme.com"]}},
        request=request(),
    )
    assert tried["ok"], tried
    assert tried["version"].startswith("draft-")
    assert tried["output"]["claims"] == {"strict": True, "limit": 3}
    with pytest.raises(ValidationFailed, match="domains: is required"):
        await api.call(
            tenant,
            "actions.test",
            name="domains",
            draft={"source": SOURCE, "language": "ts"},
            request=request(),
        )
    assert (await api.call(tenant, "actions.show", name="domains"))["versions"] == []
    done = await api.call(
        tenant,
        "actions.publish",
        name="domains",
        source=SOURCE,
        language="ts",
        config={"domains": ["acme.com"]},
    )
    assert done["version"]["config"] == {"domains": ["acme.com"], "strict": True, "limit": 3}

    with pytest.raises(ValidationFailed) as info:
        await api.call(
            tenant,
            "flows.attach",
            flow_type="internal_authentication",
            trigger="post_authentication",
            action="domains",
            version="1.0.0",
        )
    assert "not compatible with internal_authentication.post_authentication" in str(info.value)
    assert f"compatible: {EA}.post_authentication, {EA}.pre_creation" in str(info.value)
    await api.call(
        tenant,
        "flows.attach",
        flow_type=EA,
        trigger="post_authentication",
        action="domains",
        version="1.0.0",
    )
    ok = await trigger(nc, tenant, request())
    assert ok["decision"] == "continue", ok
    assert ok["claims"] == {"strict": True, "limit": 3}
    blocked = await trigger(nc, tenant, request(user={"id": "u", "email": "eve@evil.test"}))
    assert (blocked["decision"], blocked["reason"]) == ("block", "domain")

    listed = {r["name"]: r for r in await api.call(tenant, "actions.list")}
    assert listed["domains"]["triggers"] == made["slots"]
    assert listed["domains"]["slots"] == made["slots"]  # the slots it fits, named in full
    assert listed["domains"]["display_name"] == "Company domains only"


async def test_the_same_in_flows_as_code(worker: Worker, nc: NATS, tenant: str) -> None:
    api = AdminClient(nc, actor="alice", timeout=60)
    file = {
        "actions": [
            {
                "name": "domains",
                "source": SOURCE,
                "language": "ts",
                "display_name": "Company domains only",
                "triggers": [f"{EA}.post_authentication"],
                "config_schema": SCHEMA,
                "config": {"domains": ["acme.com"], "limit": 5},
            }
        ],
        "flows": {EA: {"post_authentication": ["domains@latest"]}},
    }
    await api.call(tenant, "apply", file=file)
    ok = await trigger(nc, tenant, request())
    assert ok["claims"] == {"strict": True, "limit": 5}, ok
    refused = {
        **file,
        "flows": {"internal_authentication": {"post_authentication": ["domains@latest"]}},
    }
    with pytest.raises(ValidationFailed, match="not compatible with internal_authentication"):
        await api.call(tenant, "apply", file=refused)
    # metadata changed in the file changes the stored action (audited); unchanged, nothing
    spec = dict(file["actions"][0])  # type: ignore[index]
    wider = {
        **spec,
        "display_name": "Domains",
        "triggers": [f"{EA}.post_authentication", "pre_creation"],
    }
    plan = await api.call(tenant, "apply", file={**file, "actions": [wider]})
    assert "update action domains: display_name, slots, triggers" in plan["changes"], plan
    shown = (await api.call(tenant, "actions.show", name="domains"))["action"]
    assert shown["display_name"] == "Domains"
    assert shown["slots"] == [  # a trigger named alone: each of its slots
        f"{EA}.post_authentication",
        f"{EA}.pre_creation",
        "internal_authentication.pre_creation",
    ]
    assert shown["triggers"] == ["post_authentication", "pre_creation"]
    again = await api.call(tenant, "apply", file={**file, "actions": [wider]})
    assert not any(c.startswith("update action") for c in again["changes"])
    updated = await audit_events(nc, tenant, "admin.action_updated")
    assert updated[0]["details"]["fields"] == ["display_name", "slots", "triggers"]
    narrower = {**spec, "triggers": ["pre_creation"]}
    with pytest.raises(ValidationFailed, match="detach it first"):
        await api.call(tenant, "apply", file={**file, "actions": [narrower]})
    bad = {"actions": [{**file["actions"][0], "config": {"domains": []}}]}  # type: ignore[index]
    with pytest.raises(ValidationFailed, match="needs at least 1 items"):
        await api.call(tenant, "apply", file=bad)
