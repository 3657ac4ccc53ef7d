"""A validation failure in plain words: every problem of an input at once, each located, a
misspelt name answered with the name meant.

Pydantic reports ``actions.0.timeout: Extra inputs are not permitted`` and
``flows.external_authentication.post_authenticaton.[key]: Input should be ...``; a user
editing a flows file wants ``actions[0] (staff-only): unknown field `timeout` (did you mean
`timeout_ms`?)``, and all of a file's problems in one go rather than one per try.
"""

from __future__ import annotations

import difflib
import re
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["field_of", "problems", "summary"]

_QUOTED = re.compile(r"'([^']*)'")
# pydantic's name for one member of a union in a location: `str`, `SlotEntry`, or
# `function-after[_same_action(), SlotEntry]` for a model with a validator
_TAG = re.compile(r"^(?:function-\w+\[.*, )?([A-Z]\w*|str|int|float|bool)\]?$")


def problems(
    exc: ValidationError, model: type[BaseModel] | None = None, raw: Any = None
) -> list[str]:
    """One line per error of ``exc``: where (``actions[0] (staff-only)``), then what.

    ``model`` (the model validated) lets an unknown field be answered with the closest
    field of its place; ``raw`` (the input) lets a list item be named by its ``name``."""
    lines = []
    for error in _meant_branches(exc.errors(include_url=False)):
        loc = tuple(error["loc"])
        kind = error["type"]
        given = error.get("input")
        if kind == "extra_forbidden" and loc:
            where, field = loc[:-1], str(loc[-1])
            known = _fields_at(model, where) if model is not None else []
            what = f"unknown field `{field}`{_meant(field, known)}"
        elif kind == "missing" and loc:
            where, what = loc[:-1], f"missing field `{loc[-1]}`"
        elif kind in ("enum", "literal_error") and isinstance(given, str):
            choices = _QUOTED.findall(str((error.get("ctx") or {}).get("expected", "")))
            meant = _meant(given, choices)
            listed = "" if meant else f" (one of: {', '.join(choices)})"
            if loc and loc[-1] == "[key]":  # a mapping's key: located at its mapping
                where, what = loc[:-2], f"unknown key `{given}`{meant}{listed}"
            else:
                where, what = loc, f"`{given}` is not allowed here{meant}{listed}"
        else:
            where = loc
            what = str(error["msg"]).removeprefix("Value error, ")
        place = _place(where, raw)
        lines.append(f"{place}: {what}" if place else what)
    return lines


def field_of(exc: ValidationError, default: str) -> str:
    """The dotted location of ``exc``'s first error (``actions.0.timeout``): the ``field``
    an error reply names, for a form to mark; ``default`` when it is the whole input."""
    errors = exc.errors(include_url=False)
    return ".".join(str(p) for p in errors[0]["loc"]) if errors and errors[0]["loc"] else default


def summary(lines: list[str]) -> str:
    """``lines`` as one message: the line itself when there is one, else a count and a list."""
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} problems:\n" + "\n".join(f"  - {line}" for line in lines)


def _meant_branches(errors: list[Any]) -> list[Any]:
    """A value that fits no member of a union gets an error per member; keep those of the
    member it was meant for: drop a member's "not of my type" error where another member
    of the same place has errors of substance (a mapping's mistakes, not "not a string")."""

    def branch(error: Any) -> tuple[tuple[Any, ...], Any] | None:
        loc = tuple(error["loc"])
        for i, part in enumerate(loc):
            if isinstance(part, str) and _TAG.match(part):
                return loc[:i], part
        return None

    substance: dict[tuple[Any, ...], set[Any]] = {}
    for error in errors:
        b = branch(error)
        if b is not None and not str(error["type"]).endswith("_type"):
            substance.setdefault(b[0], set()).add(b[1])
    kept = []
    for error in errors:
        b = branch(error)
        mistyped = str(error["type"]).endswith("_type")
        if b is not None and mistyped and substance.get(b[0], set()) - {b[1]}:
            continue
        kept.append(error)
    return kept


def _meant(given: str, known: list[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _place(loc: tuple[Any, ...], raw: Any) -> str:
    """``("actions", 0, "config")`` as ``actions[0] (staff-only).config``; pydantic's
    union-member tags (``str``, ``SlotEntry``) and ``[key]`` markers left out."""
    out = ""
    node = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str):
                out += f" ({name})"
            continue
        if part == "[key]" or _TAG.match(str(part)):
            continue
        out += f".{part}" if out else str(part)
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (empty if none)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    found = _models(current)
    return sorted({name for m in found for name in m.model_fields})


def _step(annotation: Any, part: Any) -> Any:
    """The annotation one step into ``annotation``: a model's field, a list's item, a
    dict's value, a union's member named by pydantic's tag."""
    tag = _TAG.match(part) if isinstance(part, str) else None
    for m in _models(annotation):
        if isinstance(part, str) and part in m.model_fields:
            return m.model_fields[part].annotation
        if tag is not None and tag[1] == m.__name__:
            return m
    for arg in _members(annotation):
        origin = get_origin(arg)
        if origin is list and isinstance(part, int):
            return get_args(arg)[0]
        if origin is dict and not isinstance(part, int):
            return get_args(arg)[1]
    return None


def _members(annotation: Any) -> list[Any]:
    """A union's members (the annotation itself otherwise)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
