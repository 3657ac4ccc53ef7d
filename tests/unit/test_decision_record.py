"""The decision record as consumers read it: examples/audit_consumer.py's ``events`` (the
contract's worked example) gives what gatehook's own readers give, event for event."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import ActionOutput, DecisionRecord
from gatehook.domain.decide import Step, reply_fields
from gatehook.service.encoding import encode_record, encode_reply

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from audit_consumer import events  # type: ignore[import-not-found]


def _record(pin_deferred: bool) -> bytes:
    steps = [
        Step("allow", "1.0.0", output=ActionOutput(kind="continue"), duration_ms=1.5),
        Step("risk", "2.1.0", error="timeout: 50 ms", allowed_to_fail=True),
        Step("gate", "1.0.0", output=ActionOutput(kind="block", reason="r"), duration_ms=0.2),
    ]
    ft, tr = FlowType.EXTERNAL_AUTHENTICATION.value, Trigger.POST_AUTHENTICATION.value
    fields = reply_fields("r-1", 3, steps)
    return encode_record(
        "acme.k",
        "acme",
        ft,
        tr,
        "r-1",
        "s-1",
        "u-1",
        "w1",
        3,
        steps,
        fields,
        encode_reply(fields),
        pin_deferred,
    ).data


def test_the_example_consumer_reads_a_record_as_gatehook_does() -> None:
    for pin_deferred in (False, True):
        data = _record(pin_deferred)
        ours = [
            json.loads(e.model_dump_json())
            for e in DecisionRecord.model_validate_json(data).events()
        ]
        assert events(json.loads(data)) == ours
        assert [e["action"] for e in ours] == ["allow", "risk", "gate"]
        assert [e["outcome"] for e in ours] == ["continue", "error", "block"]


def test_other_messages_are_one_event() -> None:
    event = {"event_id": "e1", "type": "flow.action_attached", "tenant": "acme"}
    assert events(event) == [event]


def test_the_contract_shows_the_example_as_it_runs() -> None:
    root = Path(__file__).resolve().parents[2]
    contract = (root / "docs" / "contract.md").read_text()
    source = (root / "examples" / "audit_consumer.py").read_text()
    start = source.index("_FROM_RECORD = ")
    end = source.index("\n\n\n", source.index("def events("))
    assert f"```python\n{source[start:end]}\n```" in contract
