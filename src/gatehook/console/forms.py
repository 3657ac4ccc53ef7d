"""HTML form fields from a template's JSON Schema, and the config back from a submitted form.

Pure functions (no I/O): the console renders ``fields(schema, config)`` and publishes
``parse(schema, form)``. Flat properties get their own input (text, number, checkbox,
select, password, one-per-line list); nested objects and lists of objects get a JSON text
area, so every template can be configured from the browser. Validation stays with the
management API: this module only turns text into JSON types, and reports what it cannot
turn (``FormErrors``, keyed by field name like the API's own errors).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Field", "FormErrors", "fields", "parse"]

Widget = Literal["text", "password", "number", "integer", "checkbox", "select", "lines", "json"]
MASK = "********"


@dataclass(frozen=True, slots=True)
class Field:
    """One input of a template's config form."""

    name: str
    label: str
    widget: Widget
    value: str  # what the input shows (checkbox: "on" or "")
    required: bool = False
    help: str = ""
    options: tuple[str, ...] = ()
    secret: bool = False


class FormErrors(ValueError):
    """Inputs whose text is not of their field's type, by field name."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _resolve(prop: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """``anyOf: [X, null]`` -> (X, nullable)."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
        if len(real) == 1:
            return {**prop, **real[0]}, len(real) < len(options)
    return prop, False


def _widget(prop: Mapping[str, Any], secret: bool) -> Widget:
    kind = prop.get("type")
    if secret:
        return "password"
    if "enum" in prop:
        return "select"
    if kind == "boolean":
        return "checkbox"
    if kind == "integer":
        return "integer"
    if kind == "number":
        return "number"
    if kind == "string":
        return "text"
    if kind == "array" and (prop.get("items") or {}).get("type") == "string":
        return "lines"
    return "json"


def _show(widget: Widget, value: Any) -> str:
    if value is None:
        return ""
    if widget == "checkbox":
        return "on" if value else ""
    if widget == "lines":
        return "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if widget == "json":
        return json.dumps(value, indent=2)
    return str(value)


def fields(schema: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> list[Field]:
    """The inputs of ``schema``'s form, showing ``config`` (or the schema's defaults)."""
    config = config or {}
    required = set(schema.get("required") or ())
    out: list[Field] = []
    for name, raw in (schema.get("properties") or {}).items():
        prop, _ = _resolve(raw)
        secret = bool(raw.get("writeOnly") or prop.get("format") == "password")
        widget = _widget(prop, secret)
        value = config.get(name, prop.get("default"))
        shown = MASK if secret and value else _show(widget, value)
        out.append(
            Field(
                name=name,
                label=str(raw.get("title") or name),
                widget=widget,
                value=shown,
                required=name in required,
                help=str(raw.get("description") or prop.get("description") or ""),
                options=tuple(str(o) for o in prop.get("enum") or ()),
                secret=secret,
            )
        )
    return out


def parse(schema: Mapping[str, Any], form: Mapping[str, str]) -> dict[str, Any]:
    """The config a submitted form means. Inputs are named ``config.<field>``; an empty
    optional input is left out (its default applies); a secret left as the mask keeps the
    stored secret (the API resolves the mask)."""
    config: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, raw in (schema.get("properties") or {}).items():
        prop, _ = _resolve(raw)
        secret = bool(raw.get("writeOnly") or prop.get("format") == "password")
        widget = _widget(prop, secret)
        text = form.get(f"config.{name}")
        if widget == "checkbox":
            config[name] = text is not None and text != ""
            continue
        text = (text or "").strip() if widget != "json" else (text or "")
        if text.strip() == "":
            continue  # its default applies; when it is required, the API says so for it
        try:
            config[name] = _value(widget, text)
        except ValueError as exc:
            errors[name] = str(exc)
    if errors:
        raise FormErrors(errors)
    return config


def _value(widget: Widget, text: str) -> Any:
    if widget == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if widget == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    if widget == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if widget == "json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    return text
