"""A slot's pure scripts (no network access) start together: the same decision as running
them in turn, taken in slot order; scripts that can reach the network, templates and
rollouts run only when the slot reaches them.

``TriggerService`` runs here on in-memory ports: a flow source of dicts, a script runner that
answers each action with a fixed result after a short wait (and counts how many run at
once), and a journal that acknowledges at once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.model import (
    ActionKind,
    ActionVersion,
    Attachment,
    FlowRevision,
    Rollout,
    ScriptStyle,
    TenantHeads,
)
from gatehook.errors import ScriptThrew
from gatehook.process.deadlines import Deadlines
from gatehook.sandbox.pool import ScriptJob, ScriptRun
from gatehook.service.ports import EncodedEvent
from gatehook.service.trigger import TriggerService
from gatehook.settings import SandboxSettings, Settings
from gatehook.templates import default_registry

NOW = datetime.now(UTC)
FT, TR = FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION
BODY = b'{"request_id":"%s","user":{"id":"u1","email":"a@acme.com"},"request":{"ip":"10.0.0.1"}}'


def script(name: str, *, hosts: list[str] | None = None, fails_open: bool = False) -> Any:
    return ActionVersion(
        tenant="acme",
        action=name,
        version="1.0.0",
        kind=ActionKind.CUSTOM,
        compiled="exports.execute = () => ({})",
        style=ScriptStyle.MODULE,
        content_hash="x",
        created_at=NOW,
        allowed_hosts=hosts or [],
        allowed_to_fail=fails_open,
    )


TEMPLATE = ActionVersion(
    tenant="acme",
    action="allow",
    version="1.0.0",
    kind=ActionKind.TEMPLATE,
    template="domain-allowlist",
    config={"domains": ["acme.com"]},
    content_hash="x",
    created_at=NOW,
)


class Flows:
    def __init__(self, versions: list[ActionVersion], rollout: str | None = None) -> None:
        self.versions = {v.action: v for v in versions}
        slot = [
            Attachment(
                action=v.action,
                version=v.version,
                rollout=Rollout(id="r1", stable=v.version, canary=v.version, percent=0)
                if v.action == rollout
                else None,
            )
            for v in versions
        ]
        self.flow = FlowRevision(
            tenant="acme", flow_type=FT, revision=1, slots={TR: slot}, created_at=NOW
        )

    async def tenant_heads(self, tenant: str) -> TenantHeads:
        return TenantHeads(revisions={FT: 1})

    async def get_flow(self, *args: Any) -> FlowRevision:
        return self.flow

    async def get_version(self, tenant: str, action: str, wanted: str) -> ActionVersion | None:
        return self.versions.get(action)

    async def pin_signin(self, *args: Any) -> Any:
        raise NotImplementedError


class Scripts:
    """Answers each action with ``results[action]`` (its output, or ``"error"``: the script
    threw) after ``wait``."""

    def __init__(self, results: dict[str, Any], wait: float = 0.02) -> None:
        self.results = results
        self.wait = wait
        self.ran: list[str] = []
        self.running = 0
        self.most = 0
        self.starts_together = True  # the pool (False: scripts run in the worker itself)
        self.affinities: list[str] = []

    async def run(self, job: ScriptJob) -> ScriptRun:
        self.ran.append(job.action)
        self.affinities.append(job.affinity)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.wait)
        finally:
            self.running -= 1
        result = self.results[job.action]
        if result == "error":
            raise ScriptThrew("boom")
        return ScriptRun(orjson.dumps(result), [], 0.1)


class Journal:
    def __init__(self) -> None:
        self.events: list[EncodedEvent] = []

    def record(self, record: EncodedEvent, deadline: float) -> asyncio.Future[bytes | None]:
        self.events.append(record)
        done: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Services:
    async def count(self, *args: Any) -> int:
        return 1

    def deliver(self, *args: Any) -> None:
        return None


def service(flows: Flows, scripts: Scripts, journal: Journal | None = None) -> TriggerService:
    return TriggerService(
        flows=flows,
        scripts=scripts,
        templates=default_registry(),
        journal=journal or Journal(),
        settings=Settings(
            worker_name="w1", sandbox=SandboxSettings(per_tenant_concurrency=8, pool_size=2)
        ),
        deadlines=Deadlines(),
        services=Services(),  # type: ignore[arg-type]
    )


async def decide(svc: TriggerService, n: int) -> dict[str, Any]:
    reply: dict[str, Any] = orjson.loads(
        await svc.handle("acme", FT.value, TR.value, BODY % f"r-{n}".encode())
    )
    return reply


def cont(**claims: Any) -> dict[str, Any]:
    return {"kind": "continue", "claims": claims}


async def test_pure_scripts_run_at_once_and_merge_in_slot_order() -> None:
    scripts = Scripts({"a": cont(x=1, a=1), "b": cont(x=2, b=1), "c": cont(x=3)})
    svc = service(Flows([script("a"), TEMPLATE, script("b"), script("c")]), scripts)
    first = await decide(svc, 0)  # versions not cached yet: each runs when reached
    assert scripts.most == 1
    second = await decide(svc, 1)
    assert scripts.most == 3  # the three started together
    for reply in (first, second):
        assert reply["decision"] == "continue"
        assert reply["claims"] == {"x": 3, "a": 1, "b": 1}  # later wins, in slot order
        assert [a["name"] for a in reply["actions"]] == ["a", "allow", "b", "c"]
    # each script's duration is its own run (>= the 20 ms it sleeps), not the time the slot
    # waited for it (c ended with b, so that would be ~0)
    assert all(a["duration_ms"] >= 15 for a in second["actions"] if a["name"] != "allow"), second[
        "actions"
    ]


async def test_a_block_drops_the_runs_the_slot_never_reached() -> None:
    scripts = Scripts({"a": cont(), "b": cont(b=1), "c": cont()})
    svc = service(Flows([script("a"), script("b"), script("c")]), scripts)
    await decide(svc, 0)  # every version reached once (and cached)
    scripts.results |= {"a": {"kind": "block", "reason": "no"}, "c": "error"}
    scripts.ran.clear()
    reply = await decide(svc, 1)
    assert (reply["decision"], reply["reason"]) == ("block", "no")
    outcomes = [(a["name"], a["outcome"]) for a in reply["actions"]]
    assert outcomes == [("a", "block"), ("b", "skipped"), ("c", "skipped")]
    assert sorted(scripts.ran) == ["a", "b", "c"]  # started early, then dropped unseen
    await asyncio.sleep(0.05)  # the dropped runs finish (c's error retrieved, not logged)


async def test_scripts_with_network_access_and_rollouts_run_only_when_reached() -> None:
    versions = [script("a"), script("net", hosts=["api.example.com"]), script("ro"), script("z")]
    scripts = Scripts({"a": cont(), "net": cont(), "ro": cont(), "z": cont()})
    svc = service(Flows(versions, rollout="ro"), scripts)
    await decide(svc, 0)
    scripts.results["a"] = {"kind": "block", "reason": "no"}
    scripts.ran.clear()
    reply = await decide(svc, 1)
    assert reply["decision"] == "block"
    assert "net" not in scripts.ran  # could have called out: never run past a block
    assert "ro" not in scripts.ran  # a rollout's version is chosen when reached
    assert sorted(scripts.ran) == ["a", "z"]


OUTCOMES = st.sampled_from(
    [
        cont(k=1),
        cont(k=2, m=1),
        {"kind": "demand_mfa", "claims": {"mfa": True}},
        {"kind": "block", "reason": "stop"},
        {"kind": "redirect", "redirect_url": "https://x.example/a"},
        "error",
    ]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(OUTCOMES, st.booleans()), min_size=2, max_size=5))
def test_started_together_decides_as_one_after_another(
    slot: list[tuple[Any, bool]],
) -> None:
    """The same slot twice: pure scripts (started together) and the same scripts with a
    network host each (run in turn): equal replies and audit events, but for timing."""

    async def both() -> tuple[list[dict[str, Any]], list[list[Any]]]:
        replies, events = [], []
        for hosts in (None, ["api.example.com"]):
            names = [f"s{i}" for i in range(len(slot))]
            versions = [
                script(n, hosts=hosts, fails_open=open_)
                for n, (_, open_) in zip(names, slot, strict=True)
            ]
            results = {n: out for n, (out, _) in zip(names, slot, strict=True)}
            journal = Journal()
            svc = service(Flows(versions), Scripts(results, wait=0.001), journal)
            await decide(svc, 0)  # warm the version cache
            journal.events.clear()
            reply = await decide(svc, 1)
            for a in reply["actions"]:
                a.pop("duration_ms")
            replies.append(reply)
            events.append([_no_timing(orjson.loads(e.data)) for e in journal.events])
        return replies, events

    replies, events = asyncio.run(both())
    assert replies[0] == replies[1]
    assert events[0] == events[1]


def _no_timing(record: dict[str, Any]) -> dict[str, Any]:
    """A decision record without what depends on the clock."""
    out = {k: v for k, v in record.items() if k != "at"}
    for run in [*out["executions"], *out["reply"]["actions"]]:
        run.pop("duration_ms", None)
    return out


async def test_under_load_they_run_in_turn() -> None:
    """When the tenant's sandbox slots are taken, or fewer than two children are idle,
    starting the scripts together would only queue them: they run in turn, as reached."""
    scripts = Scripts({"a": cont(), "b": cont(), "c": cont()})
    svc = service(Flows([script("a"), script("b"), script("c")]), scripts)
    await decide(svc, 0)
    limiter = svc.runner.fairness
    held = limiter.room("acme") - 2  # leave two slots: fewer than the three scripts
    for _ in range(held):
        assert await limiter.acquire("acme", 1)
    scripts.most = 0
    reply = await decide(svc, 1)
    assert reply["decision"] == "continue"
    assert scripts.most == 1
    for _ in range(held):
        limiter.release("acme", 0.0)
    scripts.most = 0
    await decide(svc, 2)
    assert scripts.most == 3
    assert len(set(scripts.affinities[-3:])) == 1  # started together: one child for all
    scripts.starts_together = False  # in the worker itself: a function call each, in turn
    scripts.most = 0
    await decide(svc, 3)
    assert scripts.most == 1
