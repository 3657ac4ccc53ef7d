"""A first round trip through the whole worker."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from gatehook.admin.service import AdminService
from tests.support.tenants import attach, custom, request, template, trigger
from tests.support.workers import Worker


async def test_no_flow_continues(worker: Worker, nc: NATS, tenant: str) -> None:
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue"
    assert reply["flow_revision"] is None
    assert reply["error"] is None


async def test_template_and_script(
    worker: Worker, nc: NATS, admin: AdminService, tenant: str
) -> None:
    v1 = await template(admin, tenant, "staff-only", "domain-allowlist", {"domains": ["acme.com"]})
    v2 = await custom(
        admin,
        tenant,
        "year",
        "export async function execute(input: any) {\n"
        "  return {kind: 'continue', claims: {year: 2026}};\n}\n",
        language="ts",
    )
    await attach(admin, tenant, [("staff-only", v1), ("year", v2)])
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "continue", reply
    assert reply["claims"] == {"year": 2026}
    reply = await trigger(nc, tenant, request(user={"id": "u2", "email": "eve@evil.com"}))
    assert reply["decision"] == "block"
    assert reply["reason"] == "domain_not_allowed"
