"""Each role of deploy/nats-roles.conf runs the commands docs/operations.md shows it running,
as its user would (the `gatehook` command, the example consumer), and a role that may not
gets one line saying so, never a traceback."""

from __future__ import annotations

import asyncio
import json
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from gatehook.admin.client import AdminClient
from gatehook.devservers import Server
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from gatehook.storage import MongoStore
from tests.support.roles import ROOT, Done, gatehook, role_stack
from tests.support.roles import url as _url

FILE = {
    "actions": [
        {"name": "allow", "template": "domain-allowlist", "config": {"domains": ["acme.com"]}}
    ],
    "flows": {"external_authentication": {"post_authentication": ["allow@latest"]}},
}
SLOT = "gatehook.v1.trigger.{}.external_authentication.post_authentication"


@pytest.fixture
async def stack(settings: Settings, pool: SandboxPool, store: MongoStore) -> AsyncIterator[Server]:
    """NATS under deploy/nats.conf, a worker as gatehook-worker, and acme and globex with
    a flow applied by their operators and one decision each."""
    async with role_stack(settings, pool) as server:
        for tenant in ("acme", "globex"):
            operator = f"{tenant}-operator"
            nc = await nats.connect(_url(server, operator), inbox_prefix=f"_INBOX.{operator}")
            await AdminClient(nc, principal=operator).call(tenant, "apply", file=FILE)
            await nc.close()
        for tenant in ("acme", "globex"):
            user = f"{tenant}-login"
            login = await nats.connect(_url(server, user), inbox_prefix=f"_INBOX.{user}")
            who = {"id": "u", "email": f"ann@{tenant}.com"}
            body = json.dumps({"request_id": f"{tenant}-1", "user": who}).encode()
            reply = await login.request(SLOT.format(tenant), body, timeout=10)
            assert "decision" in json.loads(reply.data)
            await login.close()
        yield server


def _events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _one_line_refusal(done: Done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("user", ["acme-audit", "acme-operator"])
async def test_a_tenants_audit_reader_tails_and_queries_its_own_events(
    stack: Server, user: str
) -> None:
    tail = await gatehook(stack, user, "audit", "tail", "-t", "acme", "--since", "1h", "--json")
    assert tail.returncode == 0, tail.stderr
    events = _events(tail.stdout)
    assert {e["type"] for e in events} >= {"admin.action_created", "flow.action_published"}
    assert {e["tenant"] for e in events} == {"acme"}
    typed = await gatehook(
        stack, user, "audit", "tail", "-t", "acme", "--type", "flow.action_attached", "--json"
    )
    assert typed.returncode == 0, typed.stderr
    assert [e["action"] for e in _events(typed.stdout)] == ["allow"]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    why = await gatehook(stack, user, "audit", "why", "-t", "acme", "--at", now, "--window", "30m")
    assert why.returncode == 0, why.stderr
    assert "change:" in why.stdout
    assert "allow@1.0.0" in why.stdout


@pytest.mark.parametrize(
    ("user", "args"),
    [
        # another tenant's events
        ("acme-audit", ("audit", "tail", "-t", "globex")),
        ("acme-operator", ("audit", "tail", "-t", "globex")),
        # every tenant's
        ("acme-audit", ("audit", "tail")),
        # a login service reads no audit
        ("acme-login", ("audit", "tail", "-t", "acme")),
        # an operator of another tenant's management API
        ("acme-operator", ("actions", "list", "-t", "globex")),
        # the audit role changes nothing
        ("acme-audit", ("actions", "list", "-t", "acme")),
    ],
)
async def test_a_role_that_may_not_gets_one_line(
    stack: Server, user: str, args: tuple[str, ...]
) -> None:
    line = _one_line_refusal(await gatehook(stack, user, *args))
    assert line.startswith("error: permission denied"), line
    assert user in line


async def test_an_operator_runs_its_tenants_commands(stack: Server, tmp_path: Path) -> None:
    listed = await gatehook(stack, "acme-operator", "actions", "list", "-t", "acme", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [a["name"] for a in json.loads(listed.stdout)] == ["allow"]
    flows = tmp_path / "acme.yaml"
    changed = json.loads(json.dumps(FILE))
    changed["actions"][0]["config"]["domains"].append("acme.org")
    flows.write_text(json.dumps({**changed, "tenant": "acme"}))
    applied = await gatehook(stack, "acme-operator", "apply", "-f", str(flows))
    assert applied.returncode == 0, applied.stderr
    assert "publish allow 1.0.1" in applied.stdout


async def test_the_audit_consumer_example_runs_as_the_audit_role(stack: Server) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    from audit_consumer import consume  # type: ignore[import-not-found]

    got: list[dict[str, Any]] = []

    async def deliver(event: dict[str, Any]) -> None:
        got.append(event)

    delivered = await consume(_url(stack, "acme-audit"), "acme", deliver, idle_rounds=1)
    assert delivered == len(got) > 0
    assert {e["tenant"] for e in got} == {"acme"}
    with pytest.raises(Exception, match=r"(?i)timeout|permissions"):
        await consume(_url(stack, "acme-audit"), "globex", deliver, idle_rounds=1)


def _client_example() -> str:
    """The Python client example of docs/integrations/README.md, as the page shows it."""
    page = (ROOT / "docs" / "integrations" / "README.md").read_text()
    start = page.index("```python\n", page.index("## Login services: the client")) + 10
    return page[start : page.index("\n```", start)]


async def test_the_python_client_example_runs_as_the_login_role(stack: Server) -> None:
    code = _client_example().replace("127.0.0.1:4222", f"127.0.0.1:{stack.port}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().split()[0] == "continue"


async def test_the_client_reports_a_refusal_as_one(stack: Server) -> None:
    from gatehook.client import GatehookClient, connect
    from gatehook.errors import TransportError

    who = {"id": "u", "email": "ann@acme.com"}
    # acme's login role asking for globex: the server refuses the publish
    nc = await connect(_url(stack, "acme-login"))
    try:
        client = GatehookClient(nc, timeout=1.0, retry=False)
        with pytest.raises(TransportError, match=r"NATS refused this connection.*globex"):
            await client.trigger(
                "globex", "external_authentication", "post_authentication", {"user": who}
            )
        reply = await client.trigger(
            "acme", "external_authentication", "post_authentication", {"user": who}
        )
        assert reply.decision == "continue"
    finally:
        await nc.close()
    # nats.connect's own inbox, which the role may not read: said so, not "no decision"
    nc = await nats.connect(_url(stack, "acme-login"))
    try:
        client = GatehookClient(nc, timeout=1.0, retry=False)
        with pytest.raises(TransportError, match=r"NATS refused this connection.*_INBOX"):
            await client.trigger(
                "acme", "external_authentication", "post_authentication", {"user": who}
            )
    finally:
        await nc.close()
