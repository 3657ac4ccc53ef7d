"""The audit events of a slot's change, rollouts included: a running rollout that its entry's
change ends is audited (it used to vanish without a word)."""

from __future__ import annotations

from gatehook.admin.slot_events import SlotChange, slot_events
from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.model import Attachment, Rollout

CHANGE = SlotChange(
    "acme", FlowType.EXTERNAL_AUTHENTICATION, Trigger.POST_AUTHENTICATION, "ops", 4, 5
)
CANARY = Rollout(id="r1", canary="1.1.0", percent=10)


def gate(version: str = "1.0.0", rollout: Rollout | None = CANARY) -> Attachment:
    return Attachment(action="gate", version=version, rollout=rollout)


def other() -> Attachment:
    return Attachment(action="other", version="2.0.0")


def kinds(before: list[Attachment], after: list[Attachment], **kw: set[str]) -> list[str]:
    return [f"{e.type}:{e.action}" for e in slot_events(CHANGE, before, after, **kw)]


def test_pinning_an_entry_with_a_running_rollout_audits_its_end() -> None:
    events = slot_events(CHANGE, [gate()], [gate("1.2.0", rollout=None)])
    assert [e.type for e in events] == ["flow.action_updated", "flow.rollout_rolled_back"]
    ended = events[1]
    assert (ended.version, ended.previous_version) == ("1.2.0", "1.0.0")
    assert ended.details == {
        "rollout": "r1",
        "canary": "1.1.0",
        "shadow": None,
        "state": "aborted",
        "reason": "replaced",
    }
    assert (ended.flow_revision, ended.flow_revision_before, ended.actor) == (5, 4, "ops")


def test_detaching_it_audits_its_end_too() -> None:
    assert kinds([gate(), other()], [other()]) == [
        "flow.action_updated:other",  # moved up one place
        "flow.rollout_rolled_back:gate",
        "flow.action_detached:gate",
    ]
    ended = slot_events(CHANGE, [gate()], [])[0]
    assert ended.details is not None
    assert ended.details["reason"] == "detached"


def test_a_reorder_or_another_entry_s_change_keeps_the_rollout() -> None:
    assert kinds([gate(), other()], [other(), gate()]) == [
        "flow.action_updated:other",
        "flow.action_updated:gate",
    ]
    assert kinds([gate(), other()], [gate()]) == ["flow.action_detached:other"]


def test_an_ended_rollout_or_one_the_caller_audits_gets_no_second_event() -> None:
    done = CANARY.model_copy(update={"state": "rolled_back"})
    assert kinds([gate(rollout=done)], [gate("1.2.0", rollout=None)]) == [
        "flow.action_updated:gate"
    ]
    # rollouts.promote: the canary becomes the version, audited by its own event
    assert kinds([gate()], [gate("1.1.0", rollout=None)], ended={"gate"}) == [
        "flow.action_updated:gate"
    ]


def test_a_new_rollout_on_the_entry_starts_one_and_ends_the_old() -> None:
    new = Rollout(id="r2", canary="1.3.0", percent=5)
    assert kinds([gate()], [gate(rollout=new)]) == [
        "flow.rollout_started:gate",
        "flow.rollout_rolled_back:gate",
    ]
