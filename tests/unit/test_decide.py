"""The decision rules as properties (Hypothesis) and a few worked examples."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gatehook.domain.contract import ActionOutput, Decision
from gatehook.domain.decide import STRENGTH, Step, decide, ends_slot

KINDS = ["continue", "block", "demand_mfa", "redirect"]


@st.composite
def outputs(draw: st.DrawFn) -> ActionOutput:
    kind = draw(st.sampled_from(KINDS))
    fields: dict[str, Any] = {"kind": kind}
    if kind == "redirect":
        fields["redirect_url"] = draw(st.sampled_from(["https://a.example/x", "http://b.example/"]))
    fields["claims"] = draw(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 9), max_size=3))
    fields["metadata"] = [
        {"key": k, "value": 1} for k in draw(st.lists(st.sampled_from("xy"), max_size=2))
    ]
    if draw(st.booleans()):
        fields["reason"] = draw(st.sampled_from(["r1", "r2"]))
    return ActionOutput(**fields)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    name = draw(st.sampled_from(["a", "b", "c", "d", "e"]))
    if draw(st.integers(0, 4)) == 0:
        return Step(name, "1.0.0", error="boom", allowed_to_fail=draw(st.booleans()))
    return Step(name, "1.0.0", output=draw(outputs()), allowed_to_fail=draw(st.booleans()))


def ran(seq: list[Step]) -> list[Step]:
    """The prefix that runs: up to and including the first step that ends the slot."""
    out = []
    for s in seq:
        out.append(s)
        if ends_slot(s):
            break
    return out


@given(st.lists(steps(), max_size=8))
def test_decision_is_the_strongest_seen(seq: list[Step]) -> None:
    reply = decide("r", 1, seq)
    prefix = ran(seq)
    if any(s.output is None and not s.allowed_to_fail for s in prefix):
        assert reply.decision is Decision.BLOCK
        assert reply.reason == "action_error"
        return
    kinds = [Decision(s.output.kind) for s in prefix if s.output is not None]
    expected = max(kinds, key=lambda k: STRENGTH[k], default=Decision.CONTINUE)
    assert reply.decision is expected


@given(st.lists(steps(), max_size=8))
def test_one_trace_entry_per_step_and_skips_after_the_end(seq: list[Step]) -> None:
    reply = decide("r", 1, seq)
    assert len(reply.actions) == len(seq)
    n = len(ran(seq))
    assert all(a.outcome == "skipped" for a in reply.actions[n:])
    assert all(a.outcome != "skipped" for a in reply.actions[:n])


@given(st.lists(steps(), max_size=8))
def test_block_carries_no_mutations(seq: list[Step]) -> None:
    reply = decide("r", 1, seq)
    if reply.decision is Decision.BLOCK:
        assert reply.claims == {}
        assert reply.metadata == []
        assert reply.user_updates == {}
        assert reply.redirect_url is None


@given(st.lists(steps(), max_size=8))
def test_mutations_merge_in_order(seq: list[Step]) -> None:
    reply = decide("r", 1, seq)
    if reply.decision is Decision.BLOCK:
        return
    claims: dict[str, Any] = {}
    metadata = []
    for s in ran(seq):
        if s.output is not None:
            claims.update(s.output.claims)
            metadata.extend(s.output.metadata)
    assert reply.claims == claims
    assert reply.metadata == metadata


@given(st.lists(steps(), max_size=8))
def test_demand_mfa_keeps_a_redirect_url(seq: list[Step]) -> None:
    reply = decide("r", 1, seq)
    redirects = [s for s in ran(seq) if s.output is not None and s.output.kind == "redirect"]
    if reply.decision in (Decision.DEMAND_MFA, Decision.REDIRECT) and redirects:
        assert reply.redirect_url == redirects[-1].output.redirect_url  # type: ignore[union-attr]
    if reply.decision is Decision.CONTINUE:
        assert reply.redirect_url is None


def test_attachments_without_steps_are_skipped() -> None:
    reply = decide(
        "r",
        3,
        [Step("a", "1.0.0", output=ActionOutput(kind="block"))],
        [("a", "1.0.0"), ("b", "2.0.0")],
    )
    assert [(a.name, a.outcome) for a in reply.actions] == [("a", "block"), ("b", "skipped")]
    assert reply.flow_revision == 3


def test_allowed_to_fail_error_is_traced_and_passed() -> None:
    seq = [
        Step("a", "1.0.0", error="threw: x", allowed_to_fail=True),
        Step("b", "1.0.0", output=ActionOutput(claims={"k": 1})),
    ]
    reply = decide("r", 1, seq)
    assert reply.decision is Decision.CONTINUE
    assert reply.claims == {"k": 1}
    assert reply.actions[0].outcome == "error"
    assert reply.actions[0].error == "threw: x"


@given(st.lists(steps(), max_size=8))
def test_so_far_agrees_with_decide_on_running_slots(seq: list[Step]) -> None:
    from gatehook.domain.decide import so_far

    running = []  # what comes before another action: steps that did not end the slot
    for s in seq:
        if ends_slot(s):
            break
        running.append(s)
    assert so_far(running) is decide("r", 1, running).decision
