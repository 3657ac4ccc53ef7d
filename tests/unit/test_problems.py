"""A refused flows file, request or config says every problem at once, located by name, a
misspelt name answered with the one meant (domain.problems)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gatehook.domain.flowfile import FlowsFile
from gatehook.domain.problems import field_of, problems, summary

BAD: dict[str, Any] = {
    "tenant": "acme",
    "actions": [
        {"name": "staff-only", "template": "domain-allowlist", "timeout": 300},
        {"name": "gate", "sourc": "export function execute() {}"},
        {"name": "hook", "target": {"endpoit": "https://hooks.acme.example/"}},
    ],
    "flows": {
        "external_authentication": {
            "post_authenticaton": ["staff-only@latest"],
            "pre_creation": [{"use": "gate@1.0.0", "canry": "gate@1.0.1"}, 5],
        },
        "externl_authentication": {"post_authentication": ["gate@latest"]},
    },
}


def refused(raw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        FlowsFile.model_validate(raw)
    return caught.value


def test_every_problem_of_a_file_at_once_in_plain_words() -> None:
    lines = problems(refused(BAD), FlowsFile, BAD)
    assert lines == [
        "actions[0] (staff-only): unknown field `timeout` (did you mean `timeout_ms`?)",
        "actions[1] (gate): unknown field `sourc` (did you mean `source`?)",
        "actions[2] (hook).target: missing field `endpoint`",
        "actions[2] (hook).target: unknown field `endpoit` (did you mean `endpoint`?)",
        "flows.external_authentication: unknown key `post_authenticaton`"
        " (did you mean `post_authentication`?)",
        # a mapping entry: its mistakes, not "Input should be a valid string" beside them
        "flows.external_authentication.pre_creation[0]: unknown field `canry`"
        " (did you mean `canary`?)",
        # neither a reference nor a mapping: both said
        "flows.external_authentication.pre_creation[1]: Input should be a valid string",
        "flows.external_authentication.pre_creation[1]: Input should be a valid dictionary"
        " or instance of SlotEntry",
        "flows: unknown key `externl_authentication` (did you mean `external_authentication`?)",
    ]
    assert summary(lines).startswith("9 problems:\n  - actions[0] (staff-only): ")


def test_a_name_with_nothing_close_lists_the_choices() -> None:
    raw = {"flows": {"somewhere": {}}}
    (line,) = problems(refused(raw), FlowsFile, raw)
    assert line.startswith("flows: unknown key `somewhere` (one of: external_authentication, ")


def test_one_problem_is_one_line_and_the_field_is_its_dotted_place() -> None:
    raw = {"actions": [{"name": "x", "source": "s", "timout_ms": 5}]}
    exc = refused(raw)
    assert summary(problems(exc, FlowsFile, raw)) == (
        "actions[0] (x): unknown field `timout_ms` (did you mean `timeout_ms`?)"
    )
    assert field_of(exc, "file") == "actions.0.timout_ms"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=15,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tenant": json_values,
            "actions": st.lists(
                st.dictionaries(
                    st.sampled_from(["name", "source", "timeout", "config", "target", "triggers"]),
                    json_values,
                    max_size=4,
                ),
                max_size=3,
            ),
            "flows": st.dictionaries(st.text(max_size=25), json_values, max_size=3),
            "extra": json_values,
        },
    )
)
def test_any_refused_file_gets_a_line_per_error_and_never_a_crash(raw: dict[str, Any]) -> None:
    try:
        FlowsFile.model_validate(raw)
    except ValidationError as exc:
        caught = exc
    else:
        return
    lines = problems(caught, FlowsFile, raw)
    assert lines
    assert all(line.strip() for line in lines)
    assert len(lines) <= len(caught.errors())
