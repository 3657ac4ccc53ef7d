"""benchmarks/chaos.py's checker finds each kind of fault it reports, so that a run where it
finds nothing means something: a clean run passes, and each broken promise is counted."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def chaos() -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("chaos")
    finally:
        sys.path.remove(str(BENCHMARKS))


def decided(gen: int) -> dict[str, Any]:
    return {"decision": "continue", "claims": {"gen": gen}, "error": None}


def record(rid: str, revision: int, executions: int = 2) -> dict[str, Any]:
    return {
        "type": "flow.decided",
        "request_id": rid,
        "decision": "continue",
        "flow_revision": revision,
        "executions": [{}] * executions,
    }


def world(chaos: Any) -> tuple[Any, list[dict[str, Any]], Any]:
    """Two sign-ins of two requests each, all decided and stored once; one change."""
    service = chaos.LoginService([], seed=1)
    events: list[dict[str, Any]] = []
    for sid, gen in (("s1", 1), ("s2", 2)):
        for n in range(2):
            rid = f"{sid}-{n}"
            req = chaos.Request(rid, sid, 0.0, [decided(gen)], [1.0], decided(gen))
            service.requests[rid] = req
            service.signins[sid].append(rid)
            events.append(record(rid, gen))
    events += [
        {"type": "flow.action_published", "action": "gate", "version": "1.0.0"},
        {"type": "flow.action_published", "action": "gate", "version": "1.0.1"},
        {"type": "flow.action_updated", "action": "gate", "version": "1.0.1"},
    ]
    gateway = chaos.Gateway(0)
    gateway.calls = gateway.answered = gateway.decided = 3
    return service, events, gateway


def findings(chaos: Any, service: Any, events: Any, gateway: Any) -> dict[str, int]:
    rows = chaos.check(service, events, [1, 2], gateway)
    return {what[2:]: n for what, n, _ in rows if what.startswith("! ") and n}


def test_a_clean_run_has_no_findings(chaos: Any) -> None:
    assert findings(chaos, *world(chaos)) == {}


def test_each_broken_promise_is_found(chaos: Any) -> None:
    service, events, gateway = world(chaos)
    service.requests["s1-0"].replies = []  # never answered
    service.requests["s1-0"].answered_at = []
    service.requests["s1-0"].decided = None
    service.requests["s2-1"].decided = decided(1)  # a sign-in on two versions
    service.requests["s1-1"].again = decided(3)  # asked again: another answer
    events = [e for e in events if e.get("request_id") != "s2-0"]  # a record lost
    events.append(record("s2-1", 2))  # a record stored twice
    events.append(record("s1-1", 1, executions=1))  # without both executions
    events = [e for e in events if e.get("type") != "flow.action_updated"]  # an event lost
    gateway.answered, gateway.decided = 2, 1
    assert findings(chaos, service, events, gateway) == {
        "unanswered by the deadline": 1,
        "decided, record missing": 1,
        "decided, stored twice": 2,
        "a record without both executions": 1,
        "asked again, another decision or claims": 1,
        "a sign-in on two versions": 1,
        "a change's management events missing": 1,
        "gateway calls unanswered": 1,
        "gateway calls not decided after the retries": 2,
    }


def test_a_seed_gives_one_schedule_and_every_kind_in_ten_minutes(chaos: Any) -> None:
    first = chaos.schedule(1, 600, 30)
    assert first == chaos.schedule(1, 600, 30)
    assert first != chaos.schedule(2, 600, 30)
    assert {f.kind for f in first} == set(chaos.KINDS)
    assert all(15 < f.at < 585 for f in first)
