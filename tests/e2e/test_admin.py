"""The management API over NATS: versions, rollout per flow, audit, validation, isolation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.domain.catalogue import all_slots
from gatehook.errors import GatehookError, NotFound, ValidationFailed
from gatehook.storage import MongoStore
from tests.support.tenants import audit_events, request, tenant_state, trigger
from tests.support.workers import Worker

PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}


def claim_v(n: int) -> str:
    return f"export function execute() {{ return {{kind: 'continue', claims: {{v: {n}}}}}; }}"


@pytest.fixture
def api(nc: NATS) -> AdminClient:
    return AdminClient(nc, actor="alice", timeout=60)


async def test_versions_rollout_and_rollback(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="ver")
    p1 = await api.call(tenant, "actions.publish", name="ver", source=claim_v(1))
    assert (p1["version"]["version"], p1["created"]) == ("1.0.0", True)
    att = await api.call(tenant, "flows.attach", action="ver", version="1.0.0", **PA)
    rev1 = att["flow"]["revision"]
    p2 = await api.call(tenant, "actions.publish", name="ver", source=claim_v(2), bump="minor")
    assert p2["version"]["version"] == "1.1.0"

    old_signin = await trigger(nc, tenant, request(signin_id="old"))
    assert old_signin["claims"] == {"v": 1}  # publishing alone changes no flow

    pin = await api.call(tenant, "flows.update", action="ver", version="1.1.0", **PA)
    rev2 = pin["flow"]["revision"]
    assert rev2 == rev1 + 1
    assert (await trigger(nc, tenant, request(signin_id="new")))["claims"] == {"v": 2}
    assert (await trigger(nc, tenant, request(signin_id="old")))["claims"] == {"v": 1}

    back = await api.call(
        tenant, "flows.rollback", flow_type="external_authentication", revision=rev1
    )
    rev3 = back["flow"]["revision"]
    assert rev3 == rev2 + 1
    assert (await trigger(nc, tenant, request(signin_id="newer")))["claims"] == {"v": 1}

    events = {
        e["type"]: e for e in await audit_events(nc, tenant) if e["type"] != "flow.action_executed"
    }
    published = await audit_events(nc, tenant, "flow.action_published")
    assert [(e["action"], e["version"], e["actor"]) for e in published] == [
        ("ver", "1.0.0", "alice"),
        ("ver", "1.1.0", "alice"),
    ]
    attached = events["flow.action_attached"]
    assert (attached["version"], attached["flow_revision_before"], attached["flow_revision"]) == (
        "1.0.0",
        None,
        rev1,
    )
    updates = await audit_events(nc, tenant, "flow.action_updated")
    assert [
        (u["previous_version"], u["version"], u["flow_revision_before"], u["flow_revision"])
        for u in updates
    ] == [("1.0.0", "1.1.0", rev1, rev2), ("1.1.0", "1.0.0", rev2, rev3)]
    history = await api.call(tenant, "flows.history", flow_type="external_authentication")
    assert [h["revision"] for h in history] == [rev3, rev2, rev1]


async def test_publishing_unchanged_content_is_a_noop(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="a")
    await api.call(tenant, "actions.publish", name="a", source=claim_v(1))
    again = await api.call(tenant, "actions.publish", name="a", source=claim_v(1))
    assert (again["version"]["version"], again["created"]) == ("1.0.0", False)
    patch = await api.call(tenant, "actions.publish", name="a", source=claim_v(2))
    assert patch["version"]["version"] == "1.0.1"
    major = await api.call(tenant, "actions.publish", name="a", source=claim_v(3), bump="major")
    assert major["version"]["version"] == "2.0.0"
    with pytest.raises(ValidationFailed, match="not above"):
        await api.call(tenant, "actions.publish", name="a", source=claim_v(4), version="1.5.0")
    explicit = await api.call(
        tenant, "actions.publish", name="a", source=claim_v(4), version="2.3.0"
    )
    assert explicit["version"]["version"] == "2.3.0"
    assert len(await audit_events(nc, tenant, "flow.action_published")) == 4


async def test_actions_list_and_show(worker: Worker, api: AdminClient, tenant: str) -> None:
    await api.call(tenant, "actions.create", name="staff", template="domain-allowlist")
    await api.call(tenant, "actions.publish", name="staff", config={"domains": ["acme.com"]})
    await api.call(tenant, "actions.create", name="custom")
    await api.call(tenant, "actions.publish", name="custom", source=claim_v(1))
    await api.call(tenant, "flows.attach", action="staff", **PA)
    await api.call(
        tenant,
        "flows.attach",
        action="staff",
        flow_type="internal_authentication",
        trigger="post_authentication",
    )
    rows = {r["name"]: r for r in await api.call(tenant, "actions.list")}
    assert rows["staff"]["kind"] == "template"
    assert rows["staff"]["attached"] == 2
    assert rows["custom"]["attached"] == 0
    assert "pre_access_token_creation" in rows["custom"]["triggers"]
    every_slot = [f"{ft}.{tr}" for ft, tr in all_slots()]
    assert rows["custom"]["slots"] == every_slot  # a script naming no trigger fits them all
    shown = await api.call(tenant, "actions.show", name="custom")
    assert shown["versions"][0]["style"] == "module"
    assert "compiled" not in shown["versions"][0]
    templates = await api.call(tenant, "templates.list")
    assert "domain-allowlist" in {t["name"] for t in templates}
    schema = await api.call(tenant, "templates.show", name="redirect-by-group")
    assert "rules" in schema["config_schema"]["properties"]


async def _counts(store: MongoStore, settings_db: str) -> dict[str, int]:
    del settings_db  # (the store is on the test's database)
    return {
        kind: sum([await coll.count_documents({}) for coll in store.buckets(kind)])
        for kind in ("actions", "versions", "flows")
    }


@pytest.mark.parametrize(
    ("op", "body", "error", "fragment"),
    [
        ("actions.create", {"name": "9bad"}, ValidationFailed, "must match"),
        ("actions.create", {"name": "x", "template": "nope"}, ValidationFailed, "unknown template"),
        (
            "actions.publish",
            {"name": "tpl", "config": {"domains": []}},
            ValidationFailed,
            "domains",
        ),
        (
            "actions.publish",
            {"name": "tpl", "config": {"domains": ["a.com"], "x": 1}},
            ValidationFailed,
            "x",
        ),
        (
            "actions.publish",
            {"name": "scr", "source": "export function execute( {"},
            ValidationFailed,
            "line 1",
        ),
        ("actions.publish", {"name": "scr", "source": "const a = 1;"}, ValidationFailed, "execute"),
        ("actions.publish", {"name": "ghost", "source": "x"}, NotFound, "not found"),
        (
            "flows.attach",
            {"action": "deco", "version": "1.0.0", **PA},
            ValidationFailed,
            "not compatible",
        ),
        ("flows.attach", {"action": "scr", "version": "9.9.9", **PA}, NotFound, "9.9.9"),
        (
            "flows.attach",
            {
                "action": "scr",
                "version": "1.0.0",
                "flow_type": "external_authentication",
                "trigger": "pre_saml_response",
            },
            ValidationFailed,
            "not a trigger",
        ),
        (
            "flows.rollback",
            {"flow_type": "complement_token", "revision": 7},
            NotFound,
            "revision 7",
        ),
        ("flows.nope", {}, GatehookError, "unknown operation"),
        ("actions.create", {"name": "ok", "tenant": "other"}, ValidationFailed, "tenant"),
    ],
)
async def test_validation_errors_write_nothing(
    worker: Worker,
    api: AdminClient,
    store: MongoStore,
    tenant: str,
    op: str,
    body: dict[str, Any],
    error: type[Exception],
    fragment: str,
) -> None:
    await api.call(tenant, "actions.create", name="tpl", template="domain-allowlist")
    await api.call(tenant, "actions.create", name="deco", template="decorate-token")
    await api.call(tenant, "actions.publish", name="deco", config={"claims": {"a": {"value": 1}}})
    await api.call(tenant, "actions.create", name="scr")
    await api.call(tenant, "actions.publish", name="scr", source=claim_v(1))
    before = await _counts(store, store._db.name)
    with pytest.raises(error, match=fragment):
        await api.call(tenant, op, **body)
    assert await _counts(store, store._db.name) == before


async def test_cross_tenant_is_not_found_and_leaves_no_trace(
    worker: Worker, nc: NATS, api: AdminClient, store: MongoStore, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="secret")
    await api.call(tenant, "actions.publish", name="secret", source=claim_v(1))
    await api.call(tenant, "flows.attach", action="secret", **PA)
    other = tenant + "-b"
    before = await _counts(store, store._db.name)
    for op, body in [
        ("actions.show", {"name": "secret"}),
        ("actions.publish", {"name": "secret", "source": claim_v(2)}),
        ("flows.attach", {"action": "secret", "version": "1.0.0", **PA}),
        ("flows.detach", {"action": "secret", **PA}),
        ("flows.update", {"action": "secret", "version": "1.0.0", **PA}),
    ]:
        with pytest.raises(NotFound):
            await api.call(other, op, **body)
    assert await api.call(other, "actions.list") == []
    assert await api.call(other, "flows.show", flow_type="external_authentication") is None
    assert await _counts(store, store._db.name) == before
    # the only trace in the other tenant: its audit of the requests it refused
    refused = await audit_events(nc, other)
    assert [e["type"] for e in refused] == ["admin.refused"] * 5
    assert [e["details"]["operation"] for e in refused] == [
        "actions.show",
        "actions.publish",
        "flows.attach",
        "flows.detach",
        "flows.update",
    ]
    assert {e["details"]["code"] for e in refused} == {"not_found"}


async def test_detach_and_reorder(worker: Worker, nc: NATS, api: AdminClient, tenant: str) -> None:
    for n in ("a", "b", "c"):
        await api.call(tenant, "actions.create", name=n)
        await api.call(tenant, "actions.publish", name=n, source=claim_v(1))
        await api.call(tenant, "flows.attach", action=n, **PA)
    reordered = await api.call(tenant, "flows.reorder", order=["c", "a", "b"], **PA)
    slot = reordered["flow"]["slots"]["post_authentication"]
    assert [a["action"] for a in slot] == ["c", "a", "b"]
    with pytest.raises(ValidationFailed, match="exactly the attached"):
        await api.call(tenant, "flows.reorder", order=["a", "b"], **PA)
    await api.call(tenant, "flows.detach", action="a", **PA)
    reply = await trigger(nc, tenant, request())
    assert [a["name"] for a in reply["actions"]] == ["c", "b"]
    detached = await audit_events(nc, tenant, "flow.action_detached")
    assert [(e["action"], e["version"]) for e in detached] == [("a", "1.0.0")]


TENANT_FILE = """
actions:
  - name: staff-only
    template: domain-allowlist
    config: {domains: [acme.com]}
  - name: add-year-claim
    file: add_year_claim.ts
    timeout_ms: 500
flows:
  external_authentication:
    post_authentication: [staff-only@1.0.0, add-year-claim@latest]
"""

YEAR_TS = """export async function execute(input: {user: {id: string}}) {
  return {kind: 'continue', claims: {year: %d}};
}
"""


async def test_apply_is_idempotent(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str, tmp_path: Path
) -> None:
    from gatehook.admin.apply import load_file

    (tmp_path / "tenant.yaml").write_text(TENANT_FILE)
    (tmp_path / "add_year_claim.ts").write_text(YEAR_TS % 2026)
    doc, sources = load_file(tmp_path / "tenant.yaml")
    file = doc.model_dump(mode="json")
    dry = await api.call(tenant, "apply", file=file, sources=sources, dry_run=True)
    assert dry["applied"] is False
    assert await api.call(tenant, "actions.list") == []
    first = await api.call(tenant, "apply", file=file, sources=sources)
    assert first["changes"] == [
        "create action staff-only (template domain-allowlist)",
        "publish staff-only 1.0.0",
        "create action add-year-claim (custom)",
        "publish add-year-claim 1.0.0",
        "set external_authentication.post_authentication: [staff-only@1.0.0, add-year-claim@1.0.0]",
    ]
    assert (await trigger(nc, tenant, request()))["claims"] == {"year": 2026}
    events_before = len(await audit_events(nc, tenant))
    second = await api.call(tenant, "apply", file=file, sources=sources)
    assert second["changes"] == []
    assert len(await audit_events(nc, tenant)) == events_before

    (tmp_path / "add_year_claim.ts").write_text(YEAR_TS % 2027)
    doc, sources = load_file(tmp_path / "tenant.yaml")
    third = await api.call(tenant, "apply", file=doc.model_dump(mode="json"), sources=sources)
    assert third["changes"] == [
        "publish add-year-claim 1.0.1",
        "set external_authentication.post_authentication: [staff-only@1.0.0, add-year-claim@1.0.1]",
    ]
    assert (await trigger(nc, tenant, request()))["claims"] == {"year": 2027}


async def test_actions_test_is_a_dry_run_with_logs(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="probe")
    src = (
        "export function execute(input) { console.log('checking', input.user.email);"
        " if (input.user.email.endsWith('@evil.test')) return {kind: 'block', reason: 'evil'};"
        " return {kind: 'continue', claims: {v: input.user.id}}; }"
    )
    await api.call(tenant, "actions.publish", name="probe", source=src)
    ok = await api.call(tenant, "actions.test", name="probe", request=request(), **PA)
    assert ok["ok"] is True
    assert ok["version"] == "1.0.0"
    assert ok["output"]["claims"] == {"v": "u1"}
    assert ok["logs"] == ["info: checking ann@acme.com"]
    evil = request(user={"id": "u2", "email": "x@evil.test"})
    blocked = await api.call(tenant, "actions.test", name="probe", request=evil, **PA)
    assert (blocked["output"]["kind"], blocked["output"]["reason"]) == ("block", "evil")

    with pytest.raises(ValidationFailed) as bad:
        await api.call(tenant, "actions.test", name="probe", request={"user": {}}, **PA)
    assert bad.value.field is not None
    assert bad.value.field.startswith("request.")
    with pytest.raises(ValidationFailed, match="not a trigger"):
        await api.call(
            tenant, "actions.test", name="probe", request=request(), flow_type="x", trigger="y"
        )
    with pytest.raises(NotFound):
        await api.call(tenant, "actions.test", name="probe", version="9.9.9", request=request())

    # A template runs too; a throwing script reports its error and its logs.
    await api.call(tenant, "actions.create", name="allow", template="domain-allowlist")
    await api.call(tenant, "actions.publish", name="allow", config={"domains": ["acme.com"]})
    tpl = await api.call(tenant, "actions.test", name="allow", request=evil, **PA)
    assert tpl["output"]["kind"] == "block"
    await api.call(tenant, "actions.create", name="thrower")
    await api.call(
        tenant,
        "actions.publish",
        name="thrower",
        source="export function execute() { console.log('before'); throw new Error('boom'); }",
    )
    failed = await api.call(tenant, "actions.test", name="thrower", request=request(), **PA)
    assert failed["ok"] is False
    assert "boom" in failed["error"]
    assert failed["logs"] == ["info: before"]
    # A dry run leaves no trace in the audit stream and decides no sign-in.
    assert await audit_events(nc, tenant, "flow.action_executed") == []


async def test_oversized_requests_get_clear_errors(
    worker: Worker, api: AdminClient, tenant: str
) -> None:
    await api.call(tenant, "actions.create", name="big")
    huge = "// " + "x" * (2 * 1024 * 1024) + "\nexport function execute() { return {}; }"
    with pytest.raises(GatehookError, match="larger than the NATS server accepts"):
        await api.call(tenant, "actions.publish", name="big", source=huge)
    large = "// " + "x" * (600 * 1024) + "\nexport function execute() { return {}; }"
    with pytest.raises(GatehookError, match="larger than"):
        await api.call(tenant, "actions.publish", name="big", source=large)
    # The worker keeps serving the API.
    assert (await api.call(tenant, "actions.show", name="big"))["versions"] == []


AUTH0_LOGIN = "exports.onExecutePostLogin = async (event, api) => {};"


# Each refusal comes last in its file (the last action, the last slot entry, the ingress), so
# that everything before it would be written if the checks ran during the writes.
@pytest.mark.parametrize(
    ("third", "slot", "extra", "fragment"),
    [
        # the third action's template config is invalid
        ({"name": "c", "template": "domain-allowlist", "config": {"domains": []}}, None, {}, "c:"),
        # the third action's script does not compile
        ({"name": "c", "source": "export function execute( {", "language": "js"}, None, {}, "c"),
        # the third action's script requires an npm package
        (
            {"name": "c", "source": "const axios = require('axios');\n" + AUTH0_LOGIN},
            None,
            {},
            r"requires 'axios' \(line 1, column 15\)",
        ),
        # the third action's secrets are misnamed
        ({"name": "c", "source": claim_v(4), "secrets": {"9x": "value"}}, None, {}, "secret name"),
        # the third action is a target whose endpoint is no URL
        ({"name": "c", "target": {"endpoint": "not a url"}}, None, {}, "target"),
        # the third action's own config schema is not one
        (
            {"name": "c", "source": claim_v(4), "config_schema": {"type": "array"}},
            None,
            {},
            "config_schema",
        ),
        # the slot names an action that exists nowhere
        (None, ["a@latest", "ghost@latest"], {}, "ghost"),
        # the slot pins a version that does not exist
        (None, ["a@latest", "b@9.9.9"], {}, "9.9.9"),
        # the slot takes the latest version of a stored action that has none
        (None, ["a@latest", "empty@latest"], {}, "no published version"),
        # the slot lists an action twice
        (None, ["a@latest", "b@latest", "a@latest"], {}, "more than once"),
        # a template attached where it cannot run
        (
            {"name": "c", "template": "decorate-token", "config": {"claims": {"a": {"value": 1}}}},
            ["a@latest", "c@latest"],
            {},
            "not compatible",
        ),
        # an Auth0 Action attached where none of its handlers runs
        ({"name": "c", "source": AUTH0_LOGIN}, ["a@latest", "c@latest"], {}, "cannot run at"),
        # the ingress keeps a secret that was never stored
        (None, None, {"ingress": {"kratos": {"api_keys": ["********"]}}}, "masked, none"),
        # the file itself is not one (an unknown key)
        (None, None, {"bogus": True}, "unknown field `bogus`"),
    ],
)
async def test_a_refused_apply_changes_nothing(
    worker: Worker,
    nc: NATS,
    api: AdminClient,
    store: MongoStore,
    tenant: str,
    third: dict[str, Any] | None,
    slot: list[str] | None,
    extra: dict[str, Any],
    fragment: str,
) -> None:
    """docs/contract.md: a refused file changes nothing, and --dry-run refuses it the same
    way; the only trace is the refusal's audit event."""
    await api.call(tenant, "actions.create", name="b")
    await api.call(tenant, "actions.publish", name="b", source=claim_v(1))  # stored: 1.0.0
    await api.call(tenant, "actions.create", name="empty")  # stored, no version
    before = await tenant_state(store, tenant)
    events = await audit_events(nc, tenant)
    actions: list[dict[str, Any]] = [
        {"name": "a", "source": claim_v(2), "language": "js"},
        {"name": "b", "source": claim_v(3), "language": "js"},  # would publish 1.0.1
    ]
    if third is not None:
        actions.append(third)
    file = {
        "actions": actions,
        "flows": {"internal_authentication": {"pre_creation": slot or ["a@latest", "b@latest"]}},
        **extra,
    }
    for dry_run in (True, False):
        with pytest.raises((ValidationFailed, NotFound), match=fragment):
            await api.call(tenant, "apply", file=file, dry_run=dry_run)
    assert await tenant_state(store, tenant) == before  # nothing created, published, set
    after = await audit_events(nc, tenant)
    assert [e["type"] for e in after[len(events) :]] == ["admin.refused"] * 2  # the refusals
    assert [a["name"] for a in await api.call(tenant, "actions.list")] == ["b", "empty"]
