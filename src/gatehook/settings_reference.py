"""The settings as their environment variables: the names (for checks of the docs) and the
reference page ``docs/configuration.md`` (written by ``scripts/gen_schemas.py``, which fails
on drift), both read from ``Settings`` so that neither can fall behind it."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from gatehook.settings import Settings

__all__ = ["Variable", "environment_names", "reference", "variables"]

PREFIX = "GATEHOOK_"


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable of ``Settings``."""

    name: str  # GATEHOOK_SANDBOX__POOL_SIZE
    group: str  # "" for top-level fields, else the nested model's field name
    default: str  # as the reference shows it
    meaning: str


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return []


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "doc_default" in extra:
        return str(extra["doc_default"])
    value = field.get_default(call_default_factory=True)
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list):
        return f"`{json.dumps([str(v) for v in value])}`"
    if isinstance(value, Path):
        value = str(value)
    return f"`{value}`"


def variables() -> Iterator[Variable]:
    """Every variable, top-level settings first, then each group in field order."""
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        model = _model_of(field.annotation)
        if model is not None:
            nested.append((name, model))
            continue
        yield _variable(PREFIX + name.upper(), "", field)
    for group, model in nested:
        yield from _group(PREFIX + group.upper() + "__", group, model)


def _group(prefix: str, group: str, model: type[BaseModel]) -> Iterator[Variable]:
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        if inner is not None:
            yield from _group(prefix + name.upper() + "__", group, inner)
        else:
            yield _variable(prefix + name.upper(), group, field)


def _variable(env: str, group: str, field: FieldInfo) -> Variable:
    meaning = field.description or ""
    choices = _choices(field.annotation)
    if choices:
        meaning += f" (one of {', '.join(f'`{c}`' for c in choices)})"
    return Variable(env, group, _default(field), meaning.replace("|", "\\|"))


def environment_names() -> set[str]:
    """Every ``GATEHOOK_*`` name ``Settings`` reads."""
    return {v.name for v in variables()}


def reference() -> str:
    """``docs/configuration.md``: every variable, its default and what it does."""
    lines = [
        "# Configuration",
        "",
        "Every setting of gatehook is an environment variable read once, at start, by one",
        "settings class (`gatehook.settings.Settings`); the worker, the console, the HTTP front",
        "and the CLI share them. Nested settings use `__` (`GATEHOOK_SANDBOX__POOL_SIZE=4`);",
        "lists are JSON (`GATEHOOK_CONSOLE__TENANTS='[\"acme\"]'`). A value a setting does not",
        "take ends the command at start with the variable's name and what is wrong (exit code",
        "2).",
        "",
        "This page is generated from the settings class (`python scripts/gen_schemas.py`; the",
        "tests fail when it differs).",
    ]
    groups: dict[str, list[Variable]] = {}
    for v in variables():
        groups.setdefault(v.group, []).append(v)
    for group, items in groups.items():
        if group:
            field = Settings.model_fields[group]
            model = _model_of(field.annotation)
            assert model is not None
            doc = inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
            doc = doc.replace("``", "`")
            title, intro = f"`{PREFIX}{group.upper()}__*`", doc
        else:
            title, intro = "General", "The connections, the worker and the decision path."
        lines += ["", f"## {title}", "", intro, ""]
        lines += ["| variable | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in items]
    return "\n".join(lines) + "\n"
