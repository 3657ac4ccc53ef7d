"""Console sign-in with OpenID Connect, in headless Chromium, against a real OpenID provider
(panva's oidc-provider on Node, on loopback; tests/oidc): authorization code with PKCE, the
operator's name from the ID token, roles per tenant from a claim, and every sign-in and
refusal in the tenant's audit stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Page, expect

from gatehook.admin.client import AdminClient
from gatehook.console.oidc import roles_from_claim
from gatehook.devservers import free_port
from gatehook.settings import OidcSettings, Settings
from tests.support.console import running_console
from tests.support.tenants import audit_events
from tests.support.workers import Worker

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_ID = "gatehook-console"


@dataclass
class Provider:
    issuer: str
    console_port: int


@pytest.fixture
def provider(tenant: str) -> Iterator[Provider]:
    node = shutil.which("node")
    assert node, "the OpenID provider runs on Node 20: install it"
    assert (OIDC_DIR / "node_modules" / "oidc-provider").exists(), "run scripts/bootstrap"
    port, console_port = free_port(), free_port()
    accounts = {
        "ann": {"preferred_username": "ann", "gatehook_roles": {tenant: "editor"}},
        "vic": {"preferred_username": "vic", "gatehook_roles": [f"{tenant}:viewer"]},
        "nobody": {"preferred_username": "nobody"},
    }
    proc = subprocess.Popen(
        [
            node,
            str(OIDC_DIR / "provider.mjs"),
            str(port),
            CLIENT_ID,
            f"http://127.0.0.1:{console_port}/oidc/callback",
            json.dumps(accounts),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("oidc provider"), line
    try:
        yield Provider(f"http://127.0.0.1:{port}", console_port)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def oidc_settings(settings: Settings, provider: Provider, tenant: str) -> Settings:
    """The console signing in at ``provider`` (on the port its redirect URI names)."""
    console = settings.console.model_copy(
        update={
            "tenants": [tenant],
            "oidc": OidcSettings(issuer=provider.issuer, client_id=CLIENT_ID),
        }
    )
    return settings.model_copy(update={"console": console})


async def sign_in_with_provider(tab: Page, base: str, login: str, start: str) -> None:
    """From a console page, through the provider's own sign-in and consent pages."""
    await tab.goto(base + start)
    await expect(tab.locator("h1")).to_have_text("Sign in")
    await tab.click("#oidc")
    await tab.fill("input[name=login]", login)
    await tab.fill("input[name=password]", "any")
    await tab.click("button[type=submit]")
    consent = tab.locator("button[type=submit]:has-text('Continue')")
    await consent.click()


async def test_operators_sign_in_with_openid_connect_and_get_their_roles(
    worker: Worker,
    settings: Settings,
    provider: Provider,
    page: Page,
    nc: NATS,
    tenant: str,
) -> None:
    async with running_console(
        oidc_settings(settings, provider, tenant), provider.console_port
    ) as base:
        # an editor of the tenant: signed in, named from the ID token, may change things
        await sign_in_with_provider(page, base, "ann", f"/t/{tenant}/actions")
        await expect(page.locator("h1")).to_have_text("Actions")
        await expect(page.locator("header")).to_contain_text("ann")
        await page.fill("input[name=name]", "from-oidc")
        await page.click("button:has-text('Create')")
        listed = await AdminClient(nc).call(tenant, "actions.list")
        assert [a["name"] for a in listed] == ["from-oidc"]
        # ...and nothing of another tenant
        await page.goto(base + "/t/othertenant/actions")
        await expect(page.locator("body")).to_contain_text("ann has no role for tenant")

        # a viewer: may look, may not change
        await page.context.clear_cookies()
        await sign_in_with_provider(page, base, "vic", f"/t/{tenant}/actions")
        await expect(page.locator("h1")).to_have_text("Actions")
        csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        refused = await page.request.post(
            base + f"/t/{tenant}/actions",
            form={"name": "by-viewer", "csrf": csrf},
            headers={"Origin": base},  # as the page's own form would (past the origin check)
        )
        assert refused.status == 403
        assert "vic may view tenant" in await refused.text()
        listed = await AdminClient(nc).call(tenant, "actions.list")
        assert [a["name"] for a in listed] == ["from-oidc"]

        # someone the provider knows but who has no console role: not signed in
        await page.context.clear_cookies()
        await sign_in_with_provider(page, base, "nobody", "/")
        await expect(page.locator("body")).to_contain_text("nobody has no console role")
        await page.goto(base + "/")
        await expect(page.locator("h1")).to_have_text("Sign in")

    # the tenant's audit stream has both sign-ins and the viewer's refusal
    events = await audit_events(nc, tenant)
    signed = [(e["actor"], e["details"]) for e in events if e["type"] == "console.signed_in"]
    assert ("console:ann", {"method": "oidc"}) in signed
    assert ("console:vic", {"method": "oidc"}) in signed
    (refusal,) = [e for e in events if e["type"] == "console.refused"]
    assert refusal["actor"] == "console:vic"
    assert refusal["details"] == {"role": "viewer", "path": f"POST /t/{tenant}/actions"}
    assert "may view tenant" in refusal["error"]
    other = await audit_events(nc, "othertenant", "console.refused")
    assert any(e["actor"] == "console:ann" for e in other)


async def test_a_forged_callback_signs_nobody_in(
    worker: Worker,
    settings: Settings,
    provider: Provider,
    page: Page,
    tenant: str,
) -> None:
    async with running_console(
        oidc_settings(settings, provider, tenant), provider.console_port
    ) as base:
        forged = await page.request.get(base + "/oidc/callback?code=stolen&state=guessed")
        assert forged.status == 401
        assert "expired or was used already" in await forged.text()
        await page.goto(base + "/")
        await expect(page.locator("h1")).to_have_text("Sign in")


def test_roles_claim_forms() -> None:
    assert roles_from_claim({"acme": "editor", "globex": "viewer"}) == {
        "acme": "editor",
        "globex": "viewer",
    }
    assert roles_from_claim(["acme:viewer", "acme:editor", "*:viewer"]) == {
        "acme": "editor",
        "*": "viewer",
    }
    # unknown roles, bad tenant names and other shapes grant nothing
    assert roles_from_claim(["acme:owner", "Bad Tenant:editor", 3]) == {}
    assert roles_from_claim("acme:editor") == {}


async def test_admin_requests_the_api_refuses_are_audited(
    worker: Worker, nc: NATS, tenant: str
) -> None:
    client = AdminClient(nc, actor="mallory")
    with contextlib.suppress(Exception):
        await client.call(tenant, "actions.create", name="Not A Name!")
    events = await audit_events(nc, tenant, "admin.refused")
    assert len(events) == 1
    (event,) = events
    assert event["actor"] == "mallory"
    assert event["details"]["operation"] == "actions.create"
    assert event["details"]["code"] == "invalid"


async def test_a_flood_of_sign_in_starts_locks_no_operator_out(
    worker: Worker,
    settings: Settings,
    provider: Provider,
    page: Page,
    tenant: str,
) -> None:
    """An outsider (from another address) starts 10,001 sign-ins and keeps starting more
    while an operator signs in: the outsider's pending sign-ins are bounded, the operator's
    is not dropped."""
    async with running_console(
        oidc_settings(settings, provider, tenant), provider.console_port
    ) as base:
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=32)
        async with aiohttp.ClientSession(connector=connector) as outsider:

            async def start() -> int:
                async with outsider.get(base + "/oidc/start", allow_redirects=False) as r:
                    return r.status

            sent = 0
            while sent < 10_001:
                statuses = await asyncio.gather(*(start() for _ in range(min(500, 10_001 - sent))))
                assert set(statuses) == {303}  # every start answered, none refused
                sent += len(statuses)
            stop = asyncio.Event()

            async def keep_flooding() -> None:
                while not stop.is_set():
                    await asyncio.gather(*(start() for _ in range(50)))

            flood = asyncio.create_task(keep_flooding())
            try:
                await sign_in_with_provider(page, base, "ann", f"/t/{tenant}/actions")
                await expect(page.locator("h1")).to_have_text("Actions")
            finally:
                stop.set()
                await flood


async def test_after_sign_in_the_console_stays_on_its_own_site(
    worker: Worker,
    settings: Settings,
    provider: Provider,
    page: Page,
    tenant: str,
) -> None:
    """``next`` that a browser would read as another site (a backslash, a tab, two slashes)
    lands on the console's home page."""
    async with running_console(
        oidc_settings(settings, provider, tenant), provider.console_port
    ) as base:
        for sneaky in ("/%5Cevil.example/", "/%09/evil.example/", "//evil.example/"):
            await page.context.clear_cookies()
            await sign_in_with_provider(page, base, "ann", f"/login?next={sneaky}")
            await expect(page.locator("header")).to_contain_text("ann")
            assert page.url.startswith(base + "/"), page.url
