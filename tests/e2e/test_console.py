"""The web console in headless Chromium (Debian's chromium driven by Playwright), against a real
worker, nats-server and MongoDB-protocol server: an operator manages actions and flows in the
browser, and every change shows up in the flows, the decisions and the audit stream.

Screenshots of the main pages go to ``build/screenshots/`` (README shows one of them).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Dialog, Page, expect

from gatehook.admin.client import AdminClient
from gatehook.console.auth import Session, Sessions
from gatehook.console.script_editor import EDITOR_CSP
from gatehook.console.security import CSP
from gatehook.console.server import ConsoleRefused, console_token
from gatehook.domain.contract import AuditEventType
from gatehook.errors import Conflict
from gatehook.settings import ConsoleSettings, Settings
from tests.support.console import TOKEN, accept_dialogs, running_console
from tests.support.tenants import audit_events, request, trigger
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}


@pytest.fixture
async def console(worker: Worker, settings: Settings) -> AsyncIterator[str]:
    """The console, talking to this test's worker."""
    async with running_console(settings) as url:
        yield url


async def sign_in(page: Page, base: str, operator: str = "olivia") -> None:
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login?next=%2F")
    await page.fill("input[name=operator]", operator)
    await page.fill("input[name=token]", TOKEN)
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("h1")).to_have_text("Pick a tenant")


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert (SHOTS / f"{name}.png").stat().st_size > 10_000


def error_for(page: Page, field: str) -> Any:
    return page.locator(f"[data-error-for='{field}']")


async def write_source(page: Page, text: str) -> None:
    """Put ``text`` in the publish form's script as a tenant does: in the editor when the
    console serves it (which writes it to the form's text area), else in the text area."""
    area = page.get_by_test_id("publish").get_by_test_id("source")
    if await area.get_attribute("data-editor") is None:
        await area.fill(text)
        return
    await expect(page.get_by_test_id("editor")).to_have_attribute("data-ready", "true")
    await page.evaluate("text => window.gatehookEditor.setValue(text)", text)
    await expect(area).to_have_value(text)


async def test_console_manages_actions_and_flows_end_to_end(
    console: str, page: Page, nc: NATS, tenant: str
) -> None:
    api = AdminClient(nc, actor="checker")
    await sign_in(page, console)
    await page.fill("input[name=tenant]", tenant)
    await page.click("button:has-text('Open')")
    await expect(page.locator("h1")).to_have_text("Actions")

    # A validation error from the API is shown next to its field.
    create = page.get_by_test_id("create-action")
    await create.locator("input[name=name]").fill("Bad Name!")
    await create.locator("button").click()
    await expect(error_for(page, "name")).to_contain_text("name")

    # A template action, configured through the form built from its JSON Schema.
    await create.locator("input[name=name]").fill("allow-acme")
    await create.locator("select[name=template]").select_option("domain-allowlist")
    await create.locator("button").click()
    await expect(page.locator("h1")).to_contain_text("allow-acme")
    publish = page.get_by_test_id("publish")
    await publish.locator("button:has-text('Publish')").click()  # domains left empty
    await expect(error_for(page, "domains")).to_be_visible()
    await publish.locator("textarea[name='config.domains']").fill("acme.com\nacme.org")
    await publish.locator("input[name='config.include_subdomains']").check()
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")
    await expect(page.get_by_test_id("shown-config")).to_contain_text("acme.org")
    await expect(page.get_by_test_id("template-source")).to_contain_text(
        "class", use_inner_text=False
    )
    await shot(page, "action-template")

    # A custom TypeScript action; a compile error comes back with its line and column.
    await page.click("nav >> text=Actions")
    create = page.get_by_test_id("create-action")
    await create.locator("input[name=name]").fill("add-claims")
    await create.locator("button").click()
    publish = page.get_by_test_id("publish")
    await publish.locator("select[name=language]").select_option("ts")
    await write_source(
        page,
        "export function execute(input: any) {\n  return { kind: 'continue', claims: { v: 1 }\n",
    )
    await publish.locator("button:has-text('Publish')").click()
    await expect(error_for(page, "source")).to_contain_text("line")
    ts = (
        "interface Out { kind: string; claims: Record<string, unknown> }\n"
        "export function execute(input: any): Out {\n"
        "  console.log('user', input.user.id);\n"
        "  return { kind: 'continue', claims: { v: VERSION, uid: input.user.id } };\n"
        "}\n"
    )
    await write_source(page, ts.replace("VERSION", "1"))
    await publish.locator("input[name=timeout_ms]").fill("500")
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")

    # The test box runs it through the sandbox on a sample request.
    await page.get_by_test_id("test").locator("button:has-text('Run')").click()
    result = page.get_by_test_id("test-result")
    await expect(result).to_contain_text('"uid": "u1"')
    await expect(result).to_contain_text("info: user u1")
    await shot(page, "action-custom")

    # Attach both to a trigger and reorder them: staged, then saved as one revision.
    await page.click("nav >> text=Flows")
    slot = page.locator("section[data-trigger=post_authentication]")
    pending = page.get_by_test_id("pending")
    for name in ("allow-acme", "add-claims"):
        await slot.get_by_label("action to add to post_authentication").select_option(name)
        await slot.locator("button:has-text('Add')").click()
        await expect(pending).to_contain_text(f"post_authentication: add {name}@1.0.0")
        slot = page.locator("section[data-trigger=post_authentication]")
    names = slot.locator("ol.atts li[data-action]")
    await expect(names).to_have_count(2)
    await slot.get_by_label("move add-claims up").click()
    await expect(names.first).to_have_attribute("data-action", "add-claims")
    await expect(pending).to_contain_text("2 changes")  # two added; their order is the list's
    # nothing is written before the save
    assert await api.call(tenant, "flows.show", flow_type="external_authentication") is None
    await page.get_by_test_id("save-flow").click()
    await expect(page.locator(".flash")).to_have_text("revision 1")
    flow = await api.call(tenant, "flows.show", flow_type="external_authentication")
    assert [a["action"] for a in flow["slots"]["post_authentication"]] == [
        "add-claims",
        "allow-acme",
    ]
    before_pin = flow["revision"]
    reply = await trigger(nc, tenant, request())
    assert (reply["decision"], reply["claims"]) == ("continue", {"v": 1, "uid": "u1"})

    # Publish 1.0.1 in the browser (the form starts from the newest source) and pin it.
    await page.goto(f"{console}/t/{tenant}/actions/add-claims")
    publish = page.get_by_test_id("publish")
    await expect(publish.locator("select[name=language]")).to_have_value("ts")
    await write_source(page, ts.replace("VERSION", "2"))
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.1")
    await page.goto(f"{console}/t/{tenant}/flows/external_authentication")
    slot = page.locator("section[data-trigger=post_authentication]")
    row = slot.locator("li[data-action=add-claims]")
    await row.get_by_label("version of add-claims", exact=True).select_option("1.0.1")
    await row.locator("button:has-text('Pin')").click()
    await expect(pending).to_contain_text("pin add-claims 1.0.0 -> 1.0.1")
    await page.get_by_test_id("save-flow").click()
    await expect(page.locator(".flash")).to_have_text("revision 2")
    await expect(
        page.locator("section[data-trigger=post_authentication] li[data-action=add-claims] .ver")
    ).to_have_text("@1.0.1")
    reply = await trigger(nc, tenant, request(signin_id="after-pin"))
    assert reply["claims"]["v"] == 2
    await shot(page, "flows")

    # Roll back to the revision before the pin.
    await page.locator(f"tr[data-revision='{before_pin}'] button").click()
    await expect(
        page.locator("section[data-trigger=post_authentication] li[data-action=add-claims] .ver")
    ).to_have_text("@1.0.0")
    reply = await trigger(nc, tenant, request(signin_id="after-rollback"))
    assert reply["claims"]["v"] == 1

    # The audit page shows the changes, signed by the operator.
    await page.click("nav >> text=Audit")
    events = page.get_by_test_id("events")
    for kind in ("flow.action_published", "flow.action_attached", "flow.action_updated"):
        await expect(events.locator(f"tr[data-type='{kind}']").first).to_be_visible()
    await expect(events).to_contain_text("console:olivia")
    await page.select_option("select[name=type]", "flow.action_updated")
    await page.click("button:has-text('Filter')")
    rows = page.get_by_test_id("events").locator("tbody tr[data-type]")
    updated = await audit_events(nc, tenant, "flow.action_updated")
    await expect(rows).to_have_count(len(updated))
    assert len(updated) >= 2  # the pin and the rollback
    assert {e["actor"] for e in updated} == {"console:olivia"}
    await shot(page, "audit")
    await page.click("nav >> text=Actions")
    await expect(page.locator("tr[data-action=add-claims] td").nth(4)).to_have_text("1")
    await shot(page, "actions")


async def test_secret_fields_are_masked_and_kept(
    console: str, page: Page, nc: NATS, tenant: str
) -> None:
    api = AdminClient(nc, actor="checker")
    await api.call(tenant, "actions.create", name="hook", template="webhook-emit")
    secret = "whsec_dGhpcyBpcyBhIHNlY3JldCBrZXkgMTIzNDU2"
    await api.call(
        tenant,
        "actions.publish",
        name="hook",
        config={"url": "https://hooks.example.com/in", "secret": secret},
    )
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/hook")
    field = page.locator("input[name='config.secret']")
    await expect(field).to_have_attribute("type", "password")
    assert secret not in await page.content()
    await page.locator("input[name='config.timeout_ms']").fill("1500")
    await page.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.1")
    shown = await api.call(tenant, "actions.show", name="hook")
    newest = next(v for v in shown["versions"] if v["version"] == "1.0.1")
    assert newest["config"]["timeout_ms"] == 1500
    assert newest["config"]["secret"] == "********"  # still set (masked), not replaced


async def test_target_action_form_shows_the_key_once(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions")
    form = page.get_by_test_id("create-action")
    await form.locator("input[name='name']").fill("groups")
    await form.locator("select[name='template']").select_option("@target")
    await form.locator("button").click()
    await expect(page.locator("h1")).to_contain_text("groups")
    publish = page.get_by_test_id("publish")
    await publish.get_by_test_id("endpoint").fill("ftp://nope")
    await publish.locator("button:has-text('Publish')").click()
    await expect(error_for(page, "target.endpoint")).to_contain_text("absolute http")
    publish = page.get_by_test_id("publish")
    await publish.get_by_test_id("endpoint").fill("https://hooks.example.com/groups")
    await publish.locator("select[name='payload']").select_option("gatehook")
    await publish.locator("textarea[name='headers']").fill("X-Env=prod")
    await publish.locator("button:has-text('Publish')").click()
    shown_key = (await page.get_by_test_id("generated-key").locator("pre").inner_text()).strip()
    await shot(page, "target")
    stored = await worker.runtime.store.get_version(tenant, "groups", "1.0.0")
    assert stored is not None
    assert stored.target is not None
    assert stored.target.signing_key == shown_key
    assert stored.target.payload == "gatehook"
    assert stored.target.headers == {"X-Env": "prod"}
    # once: the page again shows it masked, and publishing the mask back keeps it
    await page.goto(f"{console}/t/{tenant}/actions/groups")
    assert shown_key not in await page.content()
    await expect(page.get_by_test_id("generated-key")).to_have_count(0)
    await page.locator("input[name='timeout_ms']").fill("2500")
    await page.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.1")
    newer = await worker.runtime.store.get_version(tenant, "groups", "1.0.1")
    assert newer is not None
    assert newer.target is not None
    assert newer.target.signing_key == shown_key
    assert shown_key not in await page.content()


async def test_a_starter_to_a_published_attached_action(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """New action -> a TypeScript starter -> the editor opens with it -> published as is ->
    attached -> it decides; the kill switch appears only once there is something to switch."""
    api = AdminClient(nc, actor="checker")
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions")
    create = page.get_by_test_id("create-action")
    await expect(create.get_by_test_id("starter")).to_have_value("empty")
    await create.locator("input[name=name]").fill("domains")
    await create.get_by_test_id("starter").select_option("block-domain")
    await create.locator("button").click()
    await expect(page.locator("h1")).to_contain_text("domains")
    publish = page.get_by_test_id("publish")
    await expect(publish.locator("select[name=language]")).to_have_value("ts")
    await expect(publish.get_by_test_id("source")).to_contain_text("domain_not_allowed")
    await expect(publish.locator("input[name=timeout_ms]")).to_have_value("1000")
    await expect(page.get_by_test_id("kill-switch")).to_have_count(0)
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")
    await expect(page.get_by_test_id("kill-switch")).to_have_count(1)
    await api.call(
        tenant,
        "flows.attach",
        flow_type="external_authentication",
        trigger="post_authentication",
        action="domains",
        version="1.0.0",
    )
    blocked = await trigger(nc, tenant, request(user={"id": "u", "email": "eve@evil.test"}))
    assert (blocked["decision"], blocked["reason"]) == ("block", "domain_not_allowed")
    ok = await trigger(nc, tenant, request(user={"id": "u", "email": "ann@acme.com"}))
    assert ok["decision"] == "continue"

    # the page says where each version is attached, and what changed between two
    await page.goto(f"{console}/t/{tenant}/actions/domains")
    publish = page.get_by_test_id("publish")
    source = await publish.get_by_test_id("source").input_value()
    await write_source(page, source.replace("'acme.com'", "'acme.org'"))
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.1")
    rows = page.get_by_test_id("versions")
    await expect(rows.locator("tr[data-version='1.0.0'] [data-testid=attached-at]")).to_have_text(
        "external_authentication.post_authentication"
    )
    await expect(rows.locator("tr[data-version='1.0.1'] [data-testid=attached-at]")).to_have_text(
        "—"
    )
    await rows.locator("tr[data-version='1.0.1'] [data-testid=diff-link]").click()
    diff = page.get_by_test_id("diff")
    await expect(diff).to_contain_text("-const ALLOWED = ['acme.com'];")
    await expect(diff).to_contain_text("+const ALLOWED = ['acme.org'];")


async def test_a_custom_action_s_config_form(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """A custom action with a config schema gets the form templates have; the config it
    publishes is validated and reaches the script."""
    api = AdminClient(nc, actor="setup")
    schema = {
        "type": "object",
        "properties": {
            "greeting": {"type": "string", "minLength": 1, "title": "Greeting"},
            "times": {"type": "integer", "minimum": 1, "default": 1},
        },
        "required": ["greeting"],
    }
    await api.call(
        tenant,
        "actions.create",
        name="greet",
        display_name="Greeter",
        triggers=["external_authentication.post_authentication"],
        config_schema=schema,
    )
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/greet")
    await expect(page.get_by_test_id("display-name")).to_have_text("Greeter")
    await expect(page.get_by_test_id("compatible")).to_contain_text(
        "external_authentication.post_authentication"
    )
    publish = page.get_by_test_id("publish")
    await write_source(
        page,
        "export function execute(input: any) {\n"
        "  return {kind: 'continue', claims: {g: input.config.greeting.repeat(input.config.times)}};\n}",
    )
    await publish.locator("input[name='config.times']").fill("0")
    await publish.locator("input[name='config.greeting']").fill("hi")
    await publish.locator("button:has-text('Publish')").click()
    await expect(error_for(page, "times")).to_contain_text("at least 1")
    publish = page.get_by_test_id("publish")
    await publish.locator("input[name='config.times']").fill("2")
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")
    await api.call(
        tenant,
        "flows.attach",
        flow_type="external_authentication",
        trigger="post_authentication",
        action="greet",
        version="1.0.0",
    )
    assert (await trigger(nc, tenant, request()))["claims"] == {"g": "hihi"}


async def test_an_actions_metadata_is_set_on_its_page(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """The catalogue's "configure the action's metadata, save": display name, description,
    compatible triggers and the config schema, on the action's page, saved as one audited
    change; a trigger it is attached at cannot be left out, and bad JSON is said."""
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="meta")
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/meta")
    about = page.get_by_test_id("metadata")
    await about.locator("summary").click()
    await about.locator("input[name=display_name]").fill("Domain check")
    await about.locator("textarea[name=description]").fill("Blocks outside addresses.")
    pa = "external_authentication.post_authentication"
    for box in await about.locator("input[name=slot]").all():
        if await box.get_attribute("value") != pa:
            await box.uncheck()
    schema = {"type": "object", "properties": {"greeting": {"type": "string", "title": "Hi"}}}
    await about.get_by_test_id("config-schema").fill(json.dumps(schema))
    await about.get_by_test_id("save-metadata").click()
    await expect(page.locator(".flash")).to_contain_text("saved:")
    await expect(page.get_by_test_id("display-name")).to_have_text("Domain check")
    await expect(page.get_by_test_id("compatible")).to_have_text(f"Compatible with: {pa}")
    # the config form the schema describes, in the publish form
    await expect(
        page.get_by_test_id("publish").locator("input[name='config.greeting']")
    ).to_be_visible()
    stored = (await api.call(tenant, "actions.show", name="meta"))["action"]
    assert stored["display_name"] == "Domain check"
    assert stored["description"] == "Blocks outside addresses."
    assert stored["config_schema"] == schema
    events = await audit_events(nc, tenant, "admin.action_updated")
    assert events
    assert set(events[-1]["details"]["fields"]) >= {"display_name", "description", "triggers"}

    # attached at its one trigger: leaving that trigger out is refused, nothing changed
    source = "export function execute(input) { return {kind: 'continue'}; }"
    await api.call(tenant, "actions.publish", name="meta", source=source, config={"greeting": "x"})
    slot = {"flow_type": "external_authentication", "trigger": "post_authentication"}
    await api.call(tenant, "flows.attach", action="meta", **slot)
    await page.goto(f"{console}/t/{tenant}/actions/meta")
    about = page.get_by_test_id("metadata")
    await about.locator("summary").click()
    await about.locator(f"input[value='{pa}']").uncheck()
    await about.locator("input[value='complement_token.pre_userinfo_creation']").check()
    await about.get_by_test_id("save-metadata").click()
    await expect(error_for(page, "triggers")).to_contain_text("is attached at")
    await expect(page.get_by_test_id("compatible")).to_have_text(f"Compatible with: {pa}")
    await about.get_by_test_id("config-schema").fill("{not json")
    await about.locator(f"input[value='{pa}']").check()
    await about.get_by_test_id("save-metadata").click()
    await expect(error_for(page, "config_schema")).to_contain_text("not valid JSON")


async def test_a_draft_is_tested_before_it_is_published(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="drafty")
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/drafty")
    draft = (
        "export function execute(input: any) {\n"
        "  return {kind: 'continue', claims: {d: 1, who: input.user.email, at: input.trigger}};\n"
        "}"
    )
    await write_source(page, draft)
    # the test panel beside the editor: the trigger and the request typed there are the draft's
    await (
        page.get_by_test_id("test")
        .locator("select[name=slot]")
        .select_option("complement_token.pre_access_token_creation")
    )
    typed = json.dumps({"request_id": "r-typed", "user": {"id": "u9", "email": "zoe@acme.com"}})
    await page.get_by_test_id("test-request").fill(typed)
    await page.get_by_test_id("test-draft").click()
    result = page.get_by_test_id("test-result")
    await expect(result).to_contain_text('"d": 1')
    await expect(result).to_contain_text('"who": "zoe@acme.com"')
    await expect(result).to_contain_text("pre_access_token_creation")
    await expect(result).to_contain_text("draft-")
    await expect(page.get_by_test_id("source")).to_have_value(draft)  # still in the editor
    await expect(page.get_by_test_id("test-request")).to_have_value(typed)  # and in the panel
    await expect(page.get_by_test_id("test").locator("select[name=slot]")).to_have_value(
        "complement_token.pre_access_token_creation"
    )
    assert (await api.call(tenant, "actions.show", name="drafty"))["versions"] == []
    # a request that is not JSON is said at the panel, nothing run
    await page.get_by_test_id("test-request").fill("{not json")
    await page.get_by_test_id("test-draft").click()
    await expect(error_for(page, "request")).to_contain_text("not valid JSON")
    await expect(page.get_by_test_id("source")).to_have_value(draft)
    broken = "export function execute(input: any) {\n  return {kind: ;\n}"
    await write_source(page, broken)
    await page.get_by_test_id("test-request").fill(typed)
    await page.get_by_test_id("test-draft").click()
    await expect(error_for(page, "source")).to_contain_text("line 2")


async def markers(page: Page) -> list[dict[str, Any]]:
    """The editor's markers (the TypeScript worker's diagnostics and a publish error)."""
    found: list[dict[str, Any]] = await page.evaluate(
        "() => monaco.editor.getModelMarkers({}).map(m => ({message: m.message,"
        " line: m.startLineNumber, column: m.startColumn, owner: m.owner}))"
    )
    return found


async def test_the_editor_knows_the_contract(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """The script editor is Monaco served by the console (under its own CSP, nothing from
    elsewhere), with the contract's types: a misspelt input field and a wrong result kind are
    marked while typing, a correct starter has no marker, and a publish error is marked at
    its line."""
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            outside.append(r.url) if not r.url.startswith((console, "blob:", "data:")) else None
        ),
    )
    refused: list[str] = []
    page.on(
        "console",
        lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions")
    create = page.get_by_test_id("create-action")
    await create.locator("input[name=name]").fill("typed")
    await create.get_by_test_id("starter").select_option("mfa-risk")
    await create.locator("button").click()
    editor = page.get_by_test_id("editor")
    await expect(editor).to_have_attribute("data-ready", "true")
    await expect(page.get_by_test_id("source")).to_be_hidden()
    shown = await page.request.get(page.url)
    assert shown.headers["content-security-policy"] == EDITOR_CSP
    types = await page.request.get(f"{console}/editor/gatehook.d.ts")
    assert await types.text() == (ROOT / "schemas" / "gatehook.d.ts").read_text()

    # the starter as it opens: the worker has checked it and found nothing
    await page.wait_for_function("() => window.gatehookEditor.getModel().getValue().length > 0")
    await asyncio.sleep(1.5)  # the TypeScript worker's diagnostics come after a short delay
    assert await markers(page) == []

    # a tenant types a wrong field into the editor
    await editor.locator(".view-lines").click()
    await page.keyboard.press("Control+End")
    await page.keyboard.type("\nexport const who = (i: gatehook.Input) => i.usr;\n")
    await page.keyboard.type("export const bad: gatehook.Result = { kind: 'blok' };\n")
    await expect(editor.locator(".squiggly-error").first).to_be_visible()
    found = await markers(page)
    assert any("'usr' does not exist on type 'Input'" in m["message"] for m in found), found
    assert any('"blok"' in m["message"] for m in found), found
    squiggle = await editor.locator(".squiggly-error").first.bounding_box()
    assert squiggle is not None
    await page.mouse.move(squiggle["x"] + squiggle["width"] / 2, squiggle["y"] + 4)
    await expect(page.locator(".monaco-hover").first).to_contain_text("usr")
    await shot(page, "action-editor")
    await page.get_by_test_id("publish").screenshot(path=str(SHOTS / "action-editor-form.png"))
    # what was typed is what the form posts
    assert "i.usr" in await page.get_by_test_id("source").input_value()

    # a syntax error at publish comes back marked at its line and column
    await write_source(
        page, "export function execute(input: gatehook.Input) {\n  return {kind: ;\n}"
    )
    await page.get_by_test_id("publish").locator("button:has-text('Publish')").click()
    await expect(error_for(page, "source")).to_contain_text("line 2")
    await expect(page.get_by_test_id("editor")).to_have_attribute("data-ready", "true")
    said = re.search(r"\(line (\d+), column (\d+)\)", await error_for(page, "source").inner_text())
    assert said is not None
    published = [m for m in await markers(page) if m["owner"] == "publish"]
    assert [(m["line"], m["column"]) for m in published] == [(2, int(said[2]))], published
    assert outside == [], outside
    assert refused == [], refused


async def test_a_publish_the_editor_marks_errors_in_asks_first(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """The publish itself only transpiles, so a type error would show at run time: a publish
    of a script the editor marks asks first, naming the first error; cancelled, nothing is
    published and the editor shows the line; confirmed, it is published."""
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="typo")
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/typo")
    await expect(page.get_by_test_id("editor")).to_have_attribute("data-ready", "true")
    typo = (
        "export function execute(input: gatehook.Input): gatehook.Result {\n"
        "  return {kind: 'continue', claims: {who: input.usr.id}};\n}"
    )
    await write_source(page, typo)
    await page.wait_for_function(
        "() => monaco.editor.getModelMarkers({}).some(m => m.message.includes('usr'))"
    )
    asked: list[str] = []
    answer = {"accept": False}

    async def said(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await (dialog.accept() if answer["accept"] else dialog.dismiss())

    page.remove_listener("dialog", accept_dialogs)
    page.on("dialog", said)
    await page.get_by_test_id("publish-button").click()
    await page.wait_for_function("() => document.activeElement.closest('.monaco-editor')")
    assert len(asked) == 1
    assert "line 2" in asked[0]
    assert "usr" in asked[0]
    assert "Publish anyway?" in asked[0]
    assert (await api.call(tenant, "actions.show", name="typo"))["versions"] == []
    answer["accept"] = True
    await page.get_by_test_id("publish-button").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")
    assert len(asked) == 2


async def test_the_editor_keeps_its_width_beside_the_test_panel(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """After versions are published (their table and the current source above), the editor
    keeps the wider column, and the test panel sits beside it."""
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="wide")
    long_line = "// " + "x" * 300
    for n in (1, 2):
        source = f"{long_line}\nexport function execute() {{ return {{kind: 'continue'}}; }} // {n}"
        await api.call(tenant, "actions.publish", name="wide", source=source)
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/wide")
    editor = page.get_by_test_id("editor")
    await expect(editor).to_have_attribute("data-ready", "true")
    box = await editor.bounding_box()
    panel = await page.get_by_test_id("test").bounding_box()
    assert box is not None
    assert panel is not None
    assert box["width"] > 0.45 * 1280, box  # more than half of the page's 1280 px less margins
    assert panel["x"] > box["x"] + box["width"], (box, panel)  # beside it, not under it
    assert abs(panel["y"] - box["y"]) < 400, (box, panel)
    await expect(page.get_by_test_id("compatible")).to_contain_text(
        "complement_token.pre_userinfo_creation"  # each trigger named with its flow
    )
    await shot(page, "action-editor-and-test-panel")


async def test_without_the_editor_the_script_is_a_text_area(
    worker: Worker, settings: Settings, page: Page, nc: NATS, tenant: str, tmp_path: Path
) -> None:
    """A console installed without the editor's assets serves plain text areas, the
    console's own strict policy, and publishes as well."""
    bare = settings.model_copy(
        update={"console": settings.console.model_copy(update={"editor_assets": tmp_path})}
    )
    async with running_console(bare) as url:
        await AdminClient(nc, actor="setup").call(tenant, "actions.create", name="plain")
        await sign_in(page, url)
        await page.goto(f"{url}/t/{tenant}/actions/plain")
        area = page.get_by_test_id("source")
        await expect(area).to_be_visible()
        assert await area.get_attribute("data-editor") is None
        assert (await page.request.get(page.url)).headers["content-security-policy"] == CSP
        await write_source(page, "export function execute() {\n  return {kind: 'continue'};\n}")
        await page.get_by_test_id("publish").locator("button:has-text('Publish')").click()
        await expect(page.locator(".flash")).to_have_text("published 1.0.0")


async def test_the_audit_filter_lists_every_event_type(
    console: str, page: Page, tenant: str
) -> None:
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/audit")
    listed = await page.locator("select[name=type] option").all_inner_texts()
    assert set(listed) == {"all", *get_args(AuditEventType)}


async def test_custom_action_secrets_are_set_masked_and_kept(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="keyed")
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/keyed")
    publish = page.get_by_test_id("publish")
    await write_source(
        page,
        "exports.onExecutePostLogin = async (event, api) => {\n"
        "  api.idToken.setCustomClaim('k', event.secrets.API_KEY);\n};",
    )
    await publish.get_by_test_id("secrets").fill("API_KEY=sk_live_console-secret")
    await publish.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.0")
    assert "sk_live_console-secret" not in await page.content()
    await expect(page.get_by_test_id("secrets")).to_have_value("API_KEY=********")
    await page.locator("input[name='timeout_ms']").fill("1500")
    await page.locator("button:has-text('Publish')").click()
    await expect(page.locator(".flash")).to_have_text("published 1.0.1")
    kept = await worker.runtime.store.get_version(tenant, "keyed", "1.0.1")
    assert kept is not None
    assert kept.secrets == {"API_KEY": "sk_live_console-secret"}
    await page.get_by_test_id("secrets").fill("API_KEY")
    await page.locator("button:has-text('Publish')").click()
    await expect(error_for(page, "secrets")).to_contain_text("one NAME=value a line")


async def gate_with_two_versions(nc: NATS, tenant: str) -> AdminClient:
    """An action ``gate`` with 1.0.0 (claims v: 1) and 1.0.1 (v: 2); the client that made it."""
    api = AdminClient(nc, actor="setup")
    await api.call(tenant, "actions.create", name="gate")
    for n in (1, 2):
        await api.call(
            tenant,
            "actions.publish",
            name="gate",
            source=f"export async function execute(i) {{ return {{kind: 'continue', claims: {{v: {n}}}}}; }}",
        )
    return api


async def test_kill_switch_and_rollout_buttons(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    api = await gate_with_two_versions(nc, tenant)
    entry = {"use": "gate@1.0.0", "canary": "gate@1.0.1", "percent": 30, "shadow": "gate@1.0.1"}
    await api.call(tenant, "apply", file={"flows": {PA["flow_type"]: {PA["trigger"]: [entry]}}})
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/flows/{PA['flow_type']}")
    rollout = page.get_by_test_id("rollout")
    await expect(rollout).to_contain_text("canary @1.0.1 for 30%")
    await expect(rollout).to_contain_text("running")
    await shot(page, "rollouts")
    await page.locator("button:has-text('Promote')").click()
    await expect(page.get_by_test_id("pinned")).to_have_text("@1.0.1")
    assert (await trigger(nc, tenant, request()))["claims"] == {"v": 2}
    promoted = await audit_events(nc, tenant, "flow.rollout_promoted")
    assert promoted[0]["actor"] == "console:olivia"

    await page.goto(f"{console}/t/{tenant}/actions/gate")
    switch = page.get_by_test_id("kill-switch")
    await switch.locator("input[name='reason']").fill("incident 7")
    await switch.locator("select[name='fallback']").select_option("block")
    await switch.locator("button:has-text('Disable everywhere')").click()
    await expect(page.get_by_test_id("kill-switch")).to_contain_text("Disabled by console:olivia")
    reply = await trigger(nc, tenant, request())
    assert (reply["reason"], reply["actions"][0]["outcome"]) == ("action_disabled", "disabled")
    await page.get_by_test_id("kill-switch").locator("button:has-text('Enable')").click()
    await expect(page.get_by_test_id("kill-switch")).to_contain_text("Kill switch")
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"
    off = await audit_events(nc, tenant, "flow.action_disabled")
    assert off[0]["details"] == {"reason": "incident 7", "fallback": "block"}


async def test_a_canary_is_started_and_aborted_from_the_flows_page(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    api = await gate_with_two_versions(nc, tenant)
    await api.call(tenant, "flows.attach", action="gate", version="1.0.0", **PA)
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/flows/{PA['flow_type']}")
    start = page.get_by_test_id("start-rollout")
    await start.locator("summary").click()
    await start.locator("select[name=rollout_version]").select_option("1.0.1")
    await start.locator("input[name=percent]").fill("100")
    await start.locator("input[name=min_runs]").fill("20")
    await start.locator("button:has-text('Start')").click()
    await expect(page.get_by_test_id("rollout")).to_contain_text("canary @1.0.1 for 100%")
    assert (await trigger(nc, tenant, request(signin_id="s1")))["claims"] == {"v": 2}
    started = await audit_events(nc, tenant, "flow.rollout_started")
    assert started[0]["actor"] == "console:olivia"
    flow = await api.call(tenant, "flows.show", flow_type=PA["flow_type"])
    rollout = flow["slots"][PA["trigger"]][0]["rollout"]
    assert (rollout["canary"], rollout["percent"], rollout["min_runs"]) == ("1.0.1", 100, 20)
    # the page counts its runs as the CLI's `rollout status` does (reported every 0.25 s)
    runs = page.get_by_test_id("rollout-runs")
    for _ in range(120):  # a bounded poll: up to ~30 s on a busy machine
        await page.reload()
        if "canary 1 runs" in (await runs.inner_text() if await runs.count() else ""):
            break
        await asyncio.sleep(0.25)
    await expect(runs).to_contain_text("stable 0 runs; canary 1 runs, 0.0% failed")
    await expect(runs).to_contain_text("rolled back past 5% after 20")
    # a second one on the same entry is refused while this one runs
    with pytest.raises(Conflict):
        await api.call(tenant, "rollouts.start", action="gate", shadow="1.0.1", **PA)
    await page.locator("button:has-text('Abort')").click()
    await expect(page.get_by_test_id("rollout")).to_contain_text("aborted")
    assert (await trigger(nc, tenant, request(signin_id="s2")))["claims"] == {"v": 1}


async def test_the_audit_page_finds_a_request_and_shows_details_as_json(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """A sign-in's events are found by its request or sign-in id (each action it ran, with
    its outcome), and an event's details read as JSON (null), never as Python (None)."""
    api = await gate_with_two_versions(nc, tenant)
    await api.call(tenant, "flows.attach", action="gate", version="1.0.0", **PA)
    await api.call(tenant, "rollouts.start", action="gate", canary="1.0.1", percent=10, **PA)
    asked = request(signin_id="bob-signin")
    await trigger(nc, tenant, asked)
    await trigger(nc, tenant, request())  # another request, not to be listed
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/audit?type=flow.rollout_started")
    details = page.get_by_test_id("events").locator("tbody tr").first
    await expect(details).to_contain_text('"shadow": null')
    await expect(details).not_to_contain_text("None")
    await page.goto(f"{console}/t/{tenant}/audit")
    await page.fill("input[name=request]", "bob-signin")
    await page.click("button:has-text('Filter')")
    rows = page.get_by_test_id("events").locator("tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("flow.action_executed")
    await expect(rows.first).to_contain_text(asked["request_id"])
    await rows.first.get_by_test_id("request").click()
    await expect(page.locator("input[name=request]")).to_have_value(asked["request_id"])
    await expect(rows).to_have_count(1)


async def test_the_audit_page_says_why_a_sign_in_was_blocked(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """ "Why was bob blocked?": the audit page, asked for bob's sign-in, shows its decision,
    the reason and each action run, read from the decision record."""
    file = {
        "actions": [
            {"name": "allow", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}}
        ],
        "flows": {"external_authentication": {"post_authentication": ["allow@latest"]}},
    }
    await AdminClient(nc, actor="setup").call(tenant, "apply", file=file)
    bob = request(signin_id="bob-signin")
    bob["user"].update(id="bob-1", email="bob@evil.example")
    reply = await trigger(nc, tenant, bob)
    assert reply["decision"] == "block"
    assert (await trigger(nc, tenant, request()))["decision"] == "continue"  # not listed
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/audit?request=bob-signin")
    decisions = page.get_by_test_id("decisions").locator("tbody tr")
    await expect(decisions).to_have_count(1)
    await expect(decisions.first).to_contain_text(bob["request_id"])
    await expect(decisions.first.locator("td").nth(4)).to_have_text("block")
    await expect(decisions.first.locator("td").nth(5)).to_have_text(reply["reason"])
    await expect(decisions.first.locator("td").nth(6)).to_have_text("allow@1.0.0: block")
    # asked for bob by his user id: his decision, not the other user's
    bob_again = request()
    bob_again["user"] = {**bob["user"]}
    await trigger(nc, tenant, bob_again)
    await page.goto(f"{console}/t/{tenant}/audit?request={bob['user']['id']}")
    await expect(decisions).to_have_count(2)
    await expect(decisions.first).to_contain_text(f"user {bob['user']['id']}")
    await expect(decisions.first.locator("td").nth(4)).to_have_text("block")
    runs = page.get_by_test_id("events").locator("tbody tr[data-type='flow.action_executed']")
    await expect(runs).to_have_count(2)  # each decision's run, though no event names a user
    await shot(page, "audit-why")


async def test_a_flow_offers_compatible_actions_and_refuses_others(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """The flows page offers a slot only the actions compatible with it; an attach of another
    (a page older than the action's metadata, or a hand-made form) is refused with the rule."""
    api = AdminClient(nc, actor="setup")
    source = "export async function execute(i) { return {kind: 'continue'}; }"
    for name, slots in (
        ("external-only", ["external_authentication.post_authentication"]),
        ("internal-only", ["internal_authentication.post_authentication"]),
        ("anywhere", []),
    ):
        await api.call(tenant, "actions.create", name=name, triggers=slots)
        await api.call(tenant, "actions.publish", name=name, source=source)
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/flows/{PA['flow_type']}")
    slot = page.locator(f"section[data-trigger={PA['trigger']}]")
    adding = slot.get_by_label(f"action to add to {PA['trigger']}")
    offered = await adding.locator("option").evaluate_all("options => options.map(o => o.value)")
    assert sorted(offered) == ["anywhere", "external-only"]
    # the form as a stale page or a hand-made post would send it: staged, refused at save
    await adding.evaluate(
        "s => { s.add(new Option('internal-only', 'internal-only')); s.value = 'internal-only'; }"
    )
    await slot.locator("button:has-text('Add')").click()
    await page.get_by_test_id("save-flow").click()
    refusal = page.get_by_test_id("pending").locator(".err")
    await expect(refusal).to_contain_text("internal_authentication.post_authentication")
    flow = await api.call(tenant, "flows.show", flow_type=PA["flow_type"])
    assert not (flow or {}).get("slots", {}).get(PA["trigger"])
    await page.get_by_test_id("discard").click()
    slot = page.locator(f"section[data-trigger={PA['trigger']}]")
    await slot.get_by_label(f"action to add to {PA['trigger']}").select_option("external-only")
    await slot.locator("button:has-text('Add')").click()
    await page.get_by_test_id("save-flow").click()
    await expect(page.locator(".flash")).to_contain_text("revision 1")
    await expect(
        page.locator(f"section[data-trigger={PA['trigger']}] li[data-action]")
    ).to_have_count(1)


async def test_flow_changes_are_staged_saved_as_one_revision_and_removals_confirmed(
    console: str, page: Page, nc: NATS, worker: Worker, tenant: str
) -> None:
    """The catalogue's "update the slot, save the flow": edits are staged on the page and
    saved together as one audited revision; a removal is saved only once confirmed; a flow
    changed by someone else meanwhile is said, not overwritten."""
    api = AdminClient(nc, actor="setup")
    source = "export async function execute(i) { return {kind: 'continue'}; }"
    for name in ("a", "b", "c"):
        await api.call(tenant, "actions.create", name=name)
        await api.call(tenant, "actions.publish", name=name, source=source)
    for name in ("a", "b"):
        await api.call(tenant, "flows.attach", action=name, **PA)
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/flows/{PA['flow_type']}")
    slot = page.locator(f"section[data-trigger={PA['trigger']}]")
    await slot.get_by_label("remove a").click()
    slot = page.locator(f"section[data-trigger={PA['trigger']}]")
    await slot.get_by_label(f"action to add to {PA['trigger']}").select_option("c")
    await slot.locator("button:has-text('Add')").click()
    pending = page.get_by_test_id("pending")
    await expect(pending).to_contain_text(f"{PA['trigger']}: remove a")
    await expect(pending).to_contain_text(f"{PA['trigger']}: add c@1.0.0")
    # saved without confirming the removal: refused, nothing written, the changes kept
    await page.get_by_test_id("save-flow").click()
    await expect(pending.locator(".err")).to_contain_text("confirm the removals")
    flow = await api.call(tenant, "flows.show", flow_type=PA["flow_type"])
    assert flow["revision"] == 2
    await shot(page, "flows-staged")
    await page.get_by_test_id("confirm-removals").check()
    await page.get_by_test_id("save-flow").click()
    await expect(page.locator(".flash")).to_have_text("revision 3")
    flow = await api.call(tenant, "flows.show", flow_type=PA["flow_type"])
    assert [e["action"] for e in flow["slots"][PA["trigger"]]] == ["b", "c"]
    detached = await audit_events(nc, tenant, "flow.action_detached")
    attached = await audit_events(nc, tenant, "flow.action_attached")
    assert [(e["action"], e["flow_revision"]) for e in detached] == [("a", 3)]
    assert ("c", 3) in [(e["action"], e["flow_revision"]) for e in attached]

    # someone else changes the flow while a change is staged: said, nothing overwritten
    slot = page.locator(f"section[data-trigger={PA['trigger']}]")
    await slot.get_by_label("move c up").click()
    await api.call(tenant, "flows.attach", action="a", **PA)  # revision 4, elsewhere
    await page.get_by_test_id("save-flow").click()
    await expect(pending.locator(".err")).to_contain_text("changed since revision 3")
    flow = await api.call(tenant, "flows.show", flow_type=PA["flow_type"])
    assert [e["action"] for e in flow["slots"][PA["trigger"]]] == ["b", "c", "a"]


async def test_sign_in_is_required_and_checked(
    console: str, page: Page, nc: NATS, tenant: str
) -> None:
    await page.goto(console + f"/t/{tenant}/actions")
    await expect(page).to_have_url(console + f"/login?next=%2Ft%2F{tenant}%2Factions")
    await page.fill("input[name=operator]", "mallory")
    await page.fill("input[name=token]", "wrong-token")
    await page.click("button:has-text('Sign in')")
    await expect(error_for(page, "token")).to_have_text("wrong token")
    # Signed in, a form posted without the session's CSRF token is refused and changes nothing.
    await page.fill("input[name=token]", TOKEN)
    await page.click("button:has-text('Sign in')")
    await expect(page.locator("h1")).to_have_text("Actions")
    forged = await page.request.post(
        console + f"/t/{tenant}/actions",
        form={"name": "planted", "csrf": "forged"},
        headers={"Origin": console},
    )
    assert forged.status == 403
    assert "stale form" in await forged.text()
    # With the session's real CSRF token, a post from another site is refused too.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/x"}, {}):
        cross = await page.request.post(
            console + f"/t/{tenant}/actions",
            form={"name": "planted", "csrf": csrf},
            headers=headers,
        )
        assert cross.status == 403, headers
        assert "did not come from the console" in await cross.text()
    assert await AdminClient(nc).call(tenant, "actions.list") == []
    shown = await page.request.get(console + f"/t/{tenant}/actions")
    assert shown.headers["content-security-policy"] == CSP
    assert "script-src" not in CSP  # (default-src 'none': no script at all)
    assert shown.headers["x-frame-options"] == "DENY"
    assert shown.headers["referrer-policy"] == "same-origin"
    assert shown.headers["x-content-type-options"] == "nosniff"
    await page.goto(console + f"/t/{tenant}/actions")  # a second visit of the same tenant
    await expect(page.locator("h1")).to_have_text("Actions")
    # Signing out ends the session.
    await page.click("button:has-text('sign out')")
    await page.goto(console + f"/t/{tenant}/actions")
    await expect(page.locator("h1")).to_have_text("Sign in")
    # The tenant is not in the picker's list (GATEHOOK_CONSOLE__TENANTS), so the token
    # sign-in was not audited for it at sign-in: its first page was, once.
    signed = await audit_events(nc, tenant, "console.signed_in")
    assert [(e["actor"], e["details"]) for e in signed] == [
        (
            "console:mallory",
            {"method": "token", "role": "editor", "path": f"GET /t/{tenant}/actions"},
        )
    ]


def test_token_rules() -> None:
    s = Settings(console=ConsoleSettings(host="0.0.0.0"))
    with pytest.raises(ConsoleRefused, match="without GATEHOOK_CONSOLE__TOKEN"):
        console_token(s, "0.0.0.0")
    token, generated = console_token(Settings(), "127.0.0.1")
    assert generated
    assert len(token) >= 24
    with pytest.raises(ConsoleRefused, match="at least 16"):
        console_token(Settings(console=ConsoleSettings(token="short")), "127.0.0.1")  # type: ignore[arg-type]
    fixed = Settings(console=ConsoleSettings(token=TOKEN))  # type: ignore[arg-type]
    assert console_token(fixed, "10.0.0.5") == (TOKEN, False)


def test_sessions_are_signed_and_expire() -> None:
    sessions = Sessions(TOKEN, ttl_s=60)
    cookie = sessions.issue("olivia", now=1000)
    assert sessions.operator(cookie, now=1030) == "olivia"
    assert sessions.operator(cookie, now=1061) is None  # expired
    assert Sessions("another-token-0123456789", 60).operator(cookie, now=1030) is None
    forged = cookie.replace(cookie.split(".")[0], "YWRtaW58OTk5OTk5OTk5OQ")
    assert sessions.operator(forged, now=1030) is None
    assert sessions.csrf_ok(cookie, sessions.csrf(cookie))
    assert not sessions.csrf_ok(cookie, "0" * 32)


def test_sessions_carry_the_sign_in_method() -> None:
    sessions = Sessions(TOKEN, ttl_s=60)
    token = sessions.session(sessions.issue("olivia", now=1000), now=1030)
    assert token == Session("olivia", {"*": "editor"}, "token")
    oidc = sessions.session(sessions.issue("ann", {"acme": "viewer"}, 1000, "oidc"), now=1030)
    assert oidc == Session("ann", {"acme": "viewer"}, "oidc")
    with pytest.raises(ValueError, match="sign-in method"):
        sessions.issue("ann", method="password")

    def signed(payload: str) -> str:
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{sessions._sign(payload)}"

    # a cookie issued before the method was added still reads, with no method
    assert sessions.session(signed("olivia|1060|*=editor"), now=1030) == Session(
        "olivia", {"*": "editor"}
    )
    # a signed cookie with a method that is not one is refused
    assert sessions.session(signed("olivia|1060|*=editor|magic"), now=1030) is None
    assert sessions.session(signed("olivia|1060|*=editor|token|x"), now=1030) is None


async def test_bad_addresses_get_clear_pages(console: str, page: Page, tenant: str) -> None:
    await sign_in(page, console)
    missing = await page.goto(f"{console}/t/{tenant}/actions/no-such-action")
    assert missing is not None
    assert missing.status == 404
    await expect(page.locator("p.err")).to_contain_text("no-such-action")
    bad_tenant = await page.goto(f"{console}/t/Not_A_Slug!/actions")
    assert bad_tenant is not None
    assert bad_tenant.status == 404
    bad_flow = await page.goto(f"{console}/t/{tenant}/flows/no_such_flow")
    assert bad_flow is not None
    assert bad_flow.status == 404
    # The console keeps serving after all of that.
    await page.goto(f"{console}/t/{tenant}/actions")
    await expect(page.locator("h1")).to_have_text("Actions")


async def test_a_tenant_with_nothing_stored_is_said_not_opened_silently(
    console: str, page: Page, nc: NATS, tenant: str
) -> None:
    """docs/console.md: a tenant opened with nothing stored (a typo, or a first visit) says
    so on its page; one with actions does not."""
    await AdminClient(nc, actor="checker").call(tenant, "actions.create", name="gate")
    await sign_in(page, console)
    await page.goto(f"{console}/?tenant={tenant}")
    await expect(page).to_have_url(f"{console}/t/{tenant}/actions")
    await expect(page.get_by_test_id("actions")).to_contain_text("gate")
    await expect(page.get_by_test_id("unknown-tenant")).to_have_count(0)
    typo = f"{tenant}x"
    await page.goto(f"{console}/?tenant={typo}")
    await expect(page).to_have_url(f"{console}/t/{typo}/actions")
    notice = page.get_by_test_id("unknown-tenant")
    await expect(notice).to_contain_text(f"Nothing is stored for tenant {typo} yet")
    await expect(page.get_by_test_id("create-action")).to_be_visible()


async def test_tenant_content_is_escaped(console: str, page: Page, nc: NATS, tenant: str) -> None:
    """A hostile script source or log line is shown as text, never run in the operator's page."""
    api = AdminClient(nc, actor="checker")
    await api.call(tenant, "actions.create", name="xss")
    payload = (
        "</textarea></pre><script>window.pwned = 1</script><img src=x onerror='window.pwned=2'>"
    )
    source = (
        f"// {payload}\n"
        f"export function execute() {{ console.log({payload!r}); return {{kind: 'continue'}}; }}\n"
    )
    await api.call(tenant, "actions.publish", name="xss", source=source)
    await sign_in(page, console)
    await page.goto(f"{console}/t/{tenant}/actions/xss")
    await page.get_by_test_id("test").locator("button:has-text('Run')").click()
    await expect(page.get_by_test_id("test-result")).to_contain_text("window.pwned = 1")
    await expect(page.get_by_test_id("shown-source")).to_contain_text("<script>")
    assert await page.evaluate("window.pwned") is None


def test_cli_refuses_an_open_console_on_a_public_address() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOOK_CONSOLE")}
    done = subprocess.run(
        [sys.executable, "-m", "gatehook.cli", "console", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "without GATEHOOK_CONSOLE__TOKEN" in done.stderr + done.stdout


async def test_no_worker_is_a_clear_page_not_a_crash(page: Page, settings: Settings) -> None:
    async with running_console(settings) as base:  # NATS is up, no worker serves the API
        await sign_in(page, base)
        down = await page.goto(f"{base}/t/acme/actions")
        assert down is not None
        assert down.status == 503
        await expect(page.locator("p.err")).to_contain_text("no gatehook worker is answering")
        health = await page.goto(f"{base}/healthz")
        assert health is not None
        assert health.status == 200
