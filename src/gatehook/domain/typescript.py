"""TypeScript declarations of what an action gets and returns, generated from the contract's
JSON Schema (``schemas/action-input.json``, ``schemas/action-output.json``).

One source: the pydantic models give the schemas, the schemas give these declarations, and
``scripts/gen_schemas.py --check`` fails when ``schemas/gatehook.d.ts`` drifts from them. The
console's editor loads the same text, so a misspelt ``input.usr`` or a result field that does
not exist is marked while the tenant types.

The schemas use a small part of JSON Schema (what pydantic emits): objects with properties,
``additionalProperties``, ``$ref`` to ``$defs``, ``anyOf``, ``enum``/``const``, arrays and the
scalar types. Anything else becomes ``unknown``, which never marks correct code as wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["contract_declarations", "declarations"]

# What the sandbox's runtime gives every script besides its input (sandbox/prelude.js): the
# logger, require() of the three ZITADEL modules, and for actions with allowed hosts fetch.
_RUNTIME = """// The sandbox's globals (docs/contract.md, "Actions programming model"); nothing else
// (no process, no timers, no DOM) exists in it.
declare namespace gatehook {
  interface Logger {
    log(...values: unknown[]): void;
    info(...values: unknown[]): void;
    debug(...values: unknown[]): void;
    warn(...values: unknown[]): void;
    error(...values: unknown[]): void;
  }
  interface HttpResponse {
    status: number;
    ok: boolean;
    headers: Record<string, string>;
    body: string;
    text(): string;
    json(): unknown;
  }
  interface FetchResponse {
    ok: boolean;
    status: number;
    url: string;
    headers: { get(name: string): string | null; has(name: string): boolean };
    text(): Promise<string>;
    json(): Promise<unknown>;
  }
  interface HttpOptions {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
  }
}
declare const console: gatehook.Logger;
/** Only the action's allowed hosts are reachable; the call counts against its timeout. */
declare function fetch(url: string, init?: gatehook.HttpOptions): Promise<gatehook.FetchResponse>;
declare function require(module: "zitadel/http"): {
  /** Synchronous; only the action's allowed hosts are reachable. */
  fetch(url: string, options?: gatehook.HttpOptions): gatehook.HttpResponse;
};
declare function require(module: "zitadel/log"): gatehook.Logger;
declare function require(module: "zitadel/uuid"): { v1(): string; v4(): string };
"""
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_SCALARS = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean"}


def contract_declarations() -> str:
    """``declarations`` of the contract's models, from the schemas ``schemas/`` holds."""
    from gatehook.domain.contract import ActionInput, ActionOutput

    return declarations(
        ActionInput.model_json_schema(mode="serialization"),
        ActionOutput.model_json_schema(mode="serialization"),
    )


def declarations(input_schema: Mapping[str, Any], output_schema: Mapping[str, Any]) -> str:
    """The ``gatehook`` namespace: ``gatehook.Input`` (every field present, as the worker
    sends it) and ``gatehook.Result`` (the fields a script may return, ``kind`` and the rest
    optional where the schema gives them a default), plus the types they name."""
    defs: dict[str, Mapping[str, Any]] = {}
    for schema in (input_schema, output_schema):
        for name, sub in schema.get("$defs", {}).items():
            if name in defs and defs[name] != sub:
                raise ValueError(f"two different schemas are named {name!r}")
            defs[name] = sub
    blocks = [
        _interface("Input", input_schema, all_present=True),
        _interface("Result", output_schema, all_present=False),
    ]
    for name in sorted(defs):
        # a nested type of the input is present as sent; of the output, as the schema says
        present = name in input_schema.get("$defs", {})
        blocks.append(_interface(name, defs[name], all_present=present))
    body = "\n\n".join(blocks)
    return (
        "// Generated from schemas/action-input.json and schemas/action-output.json by\n"
        "// scripts/gen_schemas.py: do not edit. docs/contract.md describes every field.\n"
        "declare namespace gatehook {\n" + _indent(body) + "\n}\n\n" + _RUNTIME
    )


def _interface(name: str, schema: Mapping[str, Any], *, all_present: bool) -> str:
    lines = _doc(schema.get("description"))
    if schema.get("type") != "object" or "properties" not in schema:
        return "\n".join([*lines, f"type {name} = {_type(schema)};"])
    lines.append(f"interface {name} {{")
    required = set(schema.get("required", ()))
    for field, sub in schema["properties"].items():
        lines += _indent_lines(_doc(sub.get("description")))
        optional = "" if all_present or field in required else "?"
        lines.append(f"  {_key(field)}{optional}: {_type(sub)};")
    extra = schema.get("additionalProperties")
    if extra is True or isinstance(extra, Mapping):
        # the declared fields must fit the index signature: only unknown always does
        lines.append("  [field: string]: unknown;")
    lines.append("}")
    return "\n".join(lines)


def _type(schema: Mapping[str, Any] | bool) -> str:
    if not isinstance(schema, Mapping):
        return "unknown"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        parts = [_type(s) for s in schema["anyOf"]]
        return " | ".join(dict.fromkeys(parts))
    kind = schema.get("type")
    if kind == "null":
        return "null"
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        item = _type(schema.get("items", {}))
        return f"({item})[]" if "|" in item else f"{item}[]"
    if kind == "object":
        if "properties" in schema:
            required = set(schema.get("required", ()))
            fields = "; ".join(
                f"{_key(k)}{'' if k in required else '?'}: {_type(v)}"
                for k, v in schema["properties"].items()
            )
            return "{ " + fields + " }"
        extra = schema.get("additionalProperties", True)
        return f"Record<string, {_type(extra) if isinstance(extra, Mapping) else 'unknown'}>"
    return "unknown"


def _key(name: str) -> str:
    return name if _IDENT.match(name) else json.dumps(name)


def _doc(text: object) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return []
    words = " ".join(text.replace("``", "`").split()).replace("*/", "* /")
    return [f"/** {words} */"]


def _indent_lines(lines: list[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())
