"""A custom action's config schema: the JSON Schema subset templates' forms use, checked
when the action is created and applied to each published config.

The subset: an ``object`` whose ``properties`` are ``string``, ``integer``, ``number``,
``boolean``, arrays of those (``items``), or nested objects of the same, with ``required``,
``default``, ``enum``, ``minimum`` / ``maximum``, ``minLength`` / ``maxLength``,
``minItems`` / ``maxItems``, ``title`` and ``description``; unknown properties refused
(``additionalProperties: false`` is implied). The console builds its form from it; the
script reads the validated config, defaults filled in, as ``input.config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaError", "check_schema", "validate"]

_TYPES = ("object", "string", "integer", "number", "boolean", "array")
_KEYS = {
    "type",
    "properties",
    "required",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "items",
    "title",
    "description",
    "additionalProperties",
}
_MAX_DEPTH = 4


class SchemaError(ValueError):
    """A schema outside the subset, or a config that does not fit it; ``path`` says where."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def check_schema(schema: Any, path: str = "", depth: int = 0) -> None:
    """Raise ``SchemaError`` unless ``schema`` is in the subset (the top level an object)."""
    if not isinstance(schema, Mapping):
        raise SchemaError(path, "a schema is an object")
    unknown = sorted(set(schema) - _KEYS)
    if unknown:
        raise SchemaError(path, f"not supported: {', '.join(unknown)}")
    kind = schema.get("type")
    if kind not in _TYPES or (not path and kind != "object"):
        raise SchemaError(path, f"type must be {'object' if not path else ' | '.join(_TYPES)}")
    if depth > _MAX_DEPTH:
        raise SchemaError(path, f"nested deeper than {_MAX_DEPTH}")
    if schema.get("additionalProperties") not in (None, False):
        raise SchemaError(path, "additionalProperties can only be false")
    if kind == "object":
        props = schema.get("properties") or {}
        if not isinstance(props, Mapping):
            raise SchemaError(path, "properties is an object")
        for name, sub in props.items():
            check_schema(sub, f"{path}.{name}" if path else str(name), depth + 1)
        required = schema.get("required") or []
        if not isinstance(required, list) or any(r not in props for r in required):
            raise SchemaError(path, "required lists properties of the object")
    if kind == "array":
        items = schema.get("items")
        if items is None:
            raise SchemaError(path, "an array needs items")
        check_schema(items, f"{path}[]", depth + 1)
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise SchemaError(path, "enum is a list")
    _check_keywords(schema, kind, path)
    if "default" in schema:
        validate(schema, schema["default"], path)


# Each keyword's own type, and the kinds it applies to: a limit of the wrong type (``minimum:
# "zzz"``) is refused when the schema is given, not when a config meets it.
_NUMBERS = {"minimum", "maximum"}
_COUNTS = {"minLength": "string", "maxLength": "string", "minItems": "array", "maxItems": "array"}


def _check_keywords(schema: Mapping[str, Any], kind: str, path: str) -> None:
    for key in _NUMBERS & set(schema):
        value = schema[key]
        if kind not in ("integer", "number"):
            raise SchemaError(path, f"{key} belongs to integer and number properties")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SchemaError(path, f"{key} must be a number")
    for key in set(_COUNTS) & set(schema):
        value = schema[key]
        if kind != _COUNTS[key]:
            raise SchemaError(path, f"{key} belongs to {_COUNTS[key]} properties")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaError(path, f"{key} must be a whole number, 0 or more")
    for key in ("title", "description"):
        if key in schema and not isinstance(schema[key], str):
            raise SchemaError(path, f"{key} must be a string")
    if "enum" in schema:
        for item in schema["enum"]:
            try:
                validate({**schema, "enum": [item]}, item, path)
            except SchemaError as exc:
                raise SchemaError(path, f"enum value {item!r} does not fit: {exc}") from None


def validate(schema: Mapping[str, Any], value: Any, path: str = "") -> Any:
    """``value`` checked against ``schema`` (in the subset), with defaults filled in."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, Mapping):
            raise SchemaError(path, "must be an object")
        props: Mapping[str, Any] = schema.get("properties") or {}
        extra = sorted(set(value) - set(props))
        if extra:
            raise SchemaError(
                path, f"unknown {'field' if len(extra) == 1 else 'fields'}: {', '.join(extra)}"
            )
        out: dict[str, Any] = {}
        for name, sub in props.items():
            where = f"{path}.{name}" if path else str(name)
            if name in value:
                out[name] = validate(sub, value[name], where)
            elif "default" in sub:
                out[name] = sub["default"]
            elif name in (schema.get("required") or []):
                raise SchemaError(where, "is required")
        return out
    if kind == "array":
        if not isinstance(value, list):
            raise SchemaError(path, "must be a list")
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(path, f"needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"takes at most {schema['maxItems']} items")
        return [validate(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "string" and not isinstance(value, str):
        raise SchemaError(path, "must be a string")
    if kind == "boolean" and not isinstance(value, bool):
        raise SchemaError(path, "must be true or false")
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(
            value, int if kind == "integer" else (int, float)
        ):
            raise SchemaError(path, f"must be {'an integer' if kind == 'integer' else 'a number'}")
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"must be at most {schema['maximum']}")
    if kind == "string":
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(path, f"needs at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"takes at most {schema['maxLength']} characters")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(path, f"must be one of {', '.join(map(str, schema['enum']))}")
    return value
