"""The config schema subset of custom actions: what it accepts, refuses, and fills in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehook.domain.config_schema import SchemaError, check_schema, validate

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5},
        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
        "n": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2, "default": []},
        "nested": {"type": "object", "properties": {"on": {"type": "boolean"}}},
    },
    "required": ["name"],
}


def test_defaults_fill_in_and_values_are_checked() -> None:
    check_schema(SCHEMA)
    assert validate(SCHEMA, {"name": "x"}) == {"name": "x", "mode": "a", "tags": []}
    for value, where in (
        ({}, "name: is required"),
        ({"name": ""}, "name: needs at least 1 characters"),
        ({"name": "x", "mode": "c"}, "mode: must be one of a, b"),
        ({"name": "x", "n": -1}, "n: must be at least 0"),
        ({"name": "x", "n": True}, "n: must be a number"),
        ({"name": "x", "tags": ["a", "b", "c"]}, "tags: takes at most 2 items"),
        ({"name": "x", "tags": [1]}, "tags[0]: must be a string"),
        ({"name": "x", "nested": {"on": "yes"}}, "nested.on: must be true or false"),
        ({"name": "x", "other": 1}, "unknown field: other"),
    ):
        with pytest.raises(SchemaError, match=where.replace("[", r"\[").replace("]", r"\]")):
            validate(SCHEMA, value)


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "string"}, "type must be object"),
        ({"type": "object", "properties": {"x": {"type": "date"}}}, "x: type must be"),
        ({"type": "object", "properties": {"x": {"type": "string", "format": "uri"}}}, "format"),
        ({"type": "object", "properties": {"x": {"type": "array"}}}, "needs items"),
        ({"type": "object", "required": ["y"]}, "required lists properties"),
        ({"type": "object", "properties": {"x": {"type": "integer", "default": "1"}}}, "integer"),
        ({"type": "object", "additionalProperties": True}, "additionalProperties"),
    ],
)
def test_schemas_outside_the_subset_are_refused(schema: dict[str, Any], says: str) -> None:
    with pytest.raises(SchemaError, match=says):
        check_schema(schema)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(JSON)
def test_any_value_is_accepted_or_refused_clearly(value: Any) -> None:
    """Whatever a tenant sends: a valid config (which validates again to itself), or a
    SchemaError, never another exception."""
    try:
        out = validate(SCHEMA, value)
    except SchemaError:
        return
    assert validate(SCHEMA, out) == out
