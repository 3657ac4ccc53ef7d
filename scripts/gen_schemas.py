"""Generate schemas/ (JSON Schema, and the actions' TypeScript declarations gatehook.d.ts) from
the contract models, and docs/configuration.md from the settings; --check fails on drift."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gatehook.domain.contract import (
    ActionInput,
    ActionOutput,
    AuditEvent,
    DecisionRecord,
    TriggerReply,
    TriggerRequest,
)
from gatehook.domain.flowfile import FlowsFile
from gatehook.domain.typescript import declarations
from gatehook.settings_reference import reference
from gatehook.templates import default_registry

ROOT = Path(__file__).resolve().parent.parent / "schemas"

MODELS: dict[str, type[BaseModel]] = {
    "trigger-request": TriggerRequest,
    "trigger-reply": TriggerReply,
    "audit-event": AuditEvent,
    "decision-record": DecisionRecord,
    "action-input": ActionInput,
    "action-output": ActionOutput,
    "flows-file": FlowsFile,
}


def documents() -> dict[str, dict[str, Any]]:
    """Every schema document by file name (without .json)."""
    docs: dict[str, dict[str, Any]] = {}
    for name, model in MODELS.items():
        docs[name] = model.model_json_schema(
            mode="validation" if "request" in name else "serialization"
        )
    for template in default_registry():
        docs[f"templates/{template.name}"] = template.config_schema()
    extra = _extra()
    docs.update(extra)
    return docs


def _extra() -> dict[str, dict[str, Any]]:
    from gatehook.admin import requests as api
    from gatehook.transport.asyncapi import asyncapi_document

    return {**api.schema_documents(), "asyncapi": asyncapi_document()}


def render(doc: dict[str, Any]) -> str:
    """Stable text of a schema."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if schemas/ differs")
    args = parser.parse_args()
    docs = documents()
    wanted = {ROOT / f"{name}.json": render(doc) for name, doc in docs.items()}
    # the console's editor serves the same text (gatehook.domain.typescript)
    wanted[ROOT / "gatehook.d.ts"] = declarations(docs["action-input"], docs["action-output"])
    # the settings' reference page, generated so that it cannot fall behind the settings
    wanted[ROOT.parent / "docs" / "configuration.md"] = reference()
    present = set(ROOT.rglob("*.json")) | set(ROOT.rglob("*.d.ts")) if ROOT.exists() else set()
    drift = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    stale = sorted(present - set(wanted))
    if args.check:
        if drift or stale:
            for p in [*drift, *stale]:
                print(f"schema drift: {p.relative_to(ROOT.parent)}", file=sys.stderr)
            print("run: python scripts/gen_schemas.py", file=sys.stderr)
            return 1
        print(f"schemas/ and docs/configuration.md up to date ({len(wanted)} files)")
        return 0
    for p, text in wanted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for p in stale:
        p.unlink()
    print(f"wrote {len(wanted)} files: schemas/ and docs/configuration.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
