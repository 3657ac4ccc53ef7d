"""Auth0 style, pure parts: which handler runs where (the domain's table and the sandbox
runtime agree on every combination), and how the slot merges scopes and metadata."""

from __future__ import annotations

import itertools
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from gatehook.domain.auth0 import (
    CLIENT_CREDENTIALS,
    EXPORTS,
    HANDLERS,
    compatible_triggers,
    handler_for,
)
from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionOutput, ScopeChanges
from gatehook.domain.decide import Step, reply_fields
from gatehook.sandbox.engine import EngineLimits, ScriptContext

SUBSETS = [
    combo for n in range(1, len(EXPORTS) + 1) for combo in itertools.combinations(EXPORTS, n)
]


def test_compatible_triggers_are_where_a_handler_runs() -> None:
    for exports in SUBSETS:
        where = [tr for tr in Trigger if handler_for(tr.value, exports) is not None]
        assert compatible_triggers(exports) == where, exports
    assert compatible_triggers(["onContinuePostLogin"]) == []  # continues only


def test_the_runtime_picks_the_handler_the_domain_names() -> None:
    """Every set of exports, at every trigger, with and without client credentials: the
    handler the engine runs (it logs its own name) is ``handler_for``'s."""
    for exports in SUBSETS:
        source = "\n".join(
            f"exports.{name} = async (event, api) => {{ console.log('{name}'); }};"
            for name in exports
        )
        ctx = ScriptContext(EngineLimits(), source, "auto", "act")
        assert ctx.style == "auth0"
        assert set(ctx.exports) == set(exports)
        cases = itertools.product(Trigger, (None, CLIENT_CREDENTIALS), (False, True))
        for trigger, protocol, resuming in cases:
            context: dict[str, object] = {"transaction": {"protocol": protocol}} if protocol else {}
            if resuming:
                context["continue"] = True
            inp = {"tenant": "t", "trigger": trigger.value, "user": {}, "request": {}}
            out = ctx.call(json.dumps({**inp, "context": context}), time.monotonic() + 5)
            want = handler_for(trigger.value, exports, protocol, resuming)
            if want is None:
                assert out.error is not None
                assert "exports no handler for the " + trigger.value in out.error["message"]
            else:
                assert out.error is None, out.error
                assert out.logs == [f"info: {want}"], (exports, trigger, protocol)
    assert set(HANDLERS) == set(Trigger)  # every trigger has an Auth0 counterpart


OPS = st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c", "d"])), max_size=12)


@given(st.lists(OPS, min_size=1, max_size=4))
def test_scopes_the_last_call_wins_over_the_slot(actions: list[list[tuple[bool, str]]]) -> None:
    steps = []
    for i, ops in enumerate(actions):
        add: list[str] = []
        remove: list[str] = []
        for adding, scope in ops:  # what the runtime does within one action
            here, there = (add, remove) if adding else (remove, add)
            if scope in there:
                there.remove(scope)
            if scope not in here:
                here.append(scope)
        out = ActionOutput(access_token_scopes=ScopeChanges(add=add, remove=remove))
        steps.append(Step(f"a{i}", "1.0.0", output=out))
    scopes = reply_fields("r", 1, steps)["access_token_scopes"]
    last = {scope: adding for ops in actions for adding, scope in ops}
    assert not set(scopes["add"]) & set(scopes["remove"])
    assert set(scopes["add"]) == {s for s, adding in last.items() if adding}
    assert set(scopes["remove"]) == {s for s, adding in last.items() if not adding}


def test_metadata_merges_per_key_and_a_block_drops_it() -> None:
    first = ActionOutput(user_updates={"app_metadata": {"a": 1, "b": 2}, "first_name": "Ann"})
    second = ActionOutput(user_updates={"app_metadata": {"b": None}, "user_metadata": {"x": 1}})
    steps = [Step("a", "1.0.0", output=first), Step("b", "1.0.0", output=second)]
    assert reply_fields("r", 1, steps)["user_updates"] == {
        "app_metadata": {"a": 1, "b": None},
        "first_name": "Ann",
        "user_metadata": {"x": 1},
    }
    denied = ActionOutput(kind="block", access_token_claims={"k": 1})
    fields = reply_fields("r", 1, [*steps, Step("c", "1.0.0", output=denied)])
    assert fields["user_updates"] == {}
    assert fields["access_token_claims"] == {}
