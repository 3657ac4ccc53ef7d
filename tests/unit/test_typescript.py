"""The actions' TypeScript declarations: generated from the contract's schemas, valid for
TypeScript's own compiler, and strict enough to catch a wrong field."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gatehook.console.starters import STARTERS
from gatehook.domain.typescript import contract_declarations, declarations

ROOT = Path(__file__).resolve().parents[2]
MODULE = ("--module", "esnext", "gatehook.d.ts", "action.ts")
TSC = ROOT / "clients/ts/node_modules/.bin/tsc"  # installed by scripts/bootstrap (npm ci)


def test_schemas_hold_the_declarations_the_console_serves() -> None:
    assert (ROOT / "schemas/gatehook.d.ts").read_text() == contract_declarations()


def test_schema_shapes_become_types() -> None:
    out = declarations(
        {
            "type": "object",
            "properties": {
                "a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "b": {"type": "array", "items": {"enum": ["x", "y"]}},
                "c": {"type": "object", "additionalProperties": {"type": "integer"}},
                "d": {"const": 3},
                "odd-name": {"$ref": "#/$defs/Thing"},
                "e": {"not": {}},
            },
            "$defs": {"Thing": {"type": "object", "properties": {"n": {"type": "number"}}}},
        },
        {
            "type": "object",
            "properties": {"k": {"type": "boolean"}, "m": {"type": "string"}},
            "required": ["k"],
            "additionalProperties": False,
        },
    )
    for line in (
        "a: string | null;",
        'b: ("x" | "y")[];',
        "c: Record<string, number>;",
        "d: 3;",
        '"odd-name": Thing;',
        "e: unknown;",
        "k: boolean;",
        "m?: string;",
        "n: number;",  # a type the input names is present as sent
    ):
        assert line in out, line
    with pytest.raises(ValueError, match="Thing"):
        declarations(
            {"type": "object", "properties": {}, "$defs": {"Thing": {"type": "string"}}},
            {"type": "object", "properties": {}, "$defs": {"Thing": {"type": "number"}}},
        )


def tsc(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "Node 20 is needed"
    assert TSC.exists(), "TypeScript's compiler comes with scripts/bootstrap"
    (tmp_path / "gatehook.d.ts").write_text(contract_declarations())
    (tmp_path / "action.ts").write_text(source)
    return subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2022", "--lib", "es2022", *MODULE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_typescript_starter_type_checks(tmp_path: Path) -> None:
    for starter in STARTERS:
        if starter.language == "ts":
            run = tsc(tmp_path, starter.for_action("x"))
            assert run.returncode == 0, (starter.id, run.stdout)


def test_a_wrong_field_and_a_wrong_kind_are_type_errors(tmp_path: Path) -> None:
    run = tsc(
        tmp_path,
        "export async function execute(input: gatehook.Input): Promise<gatehook.Result> {\n"
        "  const who = input.usr;\n"
        "  const http = require('zitadel/http');\n"
        "  http.fetch('https://a.test').json();\n"
        "  return { kind: 'blok', claims: { who } };\n"
        "}\n",
    )
    assert run.returncode != 0
    assert "action.ts(2,21): error TS2551: Property 'usr' does not exist" in run.stdout
    assert "action.ts(5,12)" in run.stdout
    assert '"blok"' in run.stdout
    assert run.stdout.count("error TS") == 2, run.stdout  # require() and fetch are declared
