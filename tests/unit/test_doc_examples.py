"""Every code block of README.md, BENCHMARKS.md and docs/ is accounted for: run as written by
a named test (most in tests/e2e/test_doc_examples.py, against a real stack), checked here
(a flows file or a fragment of one against the flows file's model, a request or a reply
against the contract's models, a benchmark's command against its options), or said why it
is not run (another system's console, a cluster). A block added to the guides fails this
test until it is one of the three; a test named here that no longer exists fails it too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gatehook.admin.files import load_yaml
from gatehook.domain.contract import AuditEvent, DecisionRecord, TriggerReply, TriggerRequest
from gatehook.domain.flowfile import FlowsFile

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
EXAMPLES_RUN = "tests/e2e/test_doc_examples.py::"
FLOWS = "checked here: a flows file"
BENCH = "checked here: a benchmark's command and options"

# (file, language, how the block's first line starts) -> who runs or checks it, or why not
EXAMPLES: dict[tuple[str, str, str], str] = {
    ("README.md", "bash", "./scripts/dev"): "tests/e2e/test_cli.py::"
    "test_the_local_stack_runs_the_production_roles (./scripts/test: CI's command)",
    ("README.md", "mermaid", "sequenceDiagram"): "not run: a diagram",
    ("docs/development.md", "mermaid", "flowchart TB"): "tests/unit/test_docs.py::"
    "test_the_architecture_names_real_modules",
    ("README.md", "", "src/gatehook/"): "tests/unit/test_docs.py::"
    "test_the_readme_map_names_every_package",
    **{
        ("BENCHMARKS.md", "bash", f".venv/bin/python benchmarks/{name}"): BENCH
        for name in (
            "run.py        #",
            "run.py --max-processes 1",
            "hostile.py",
            "cluster.py",
            "cluster_start.py",
            "failover.py    #",
            "failover.py --lanes 0",
            "chaos.py",
            "latency.py",
            "sandbox.py",
            "audit_page.py",
            "crowding.py",
            "noisy.py",
        )
    },
    ("docs/actions.md", "ts", "// risky.ts"): EXAMPLES_RUN
    + "test_the_actions_guides_first_action_runs_as_written",
    ("docs/actions.md", "bash", "gatehook actions test risky.ts"): EXAMPLES_RUN
    + "test_the_actions_guides_first_action_runs_as_written",
    ("docs/actions.md", "bash", "gatehook actions test examples/"): EXAMPLES_RUN
    + "test_the_actions_guides_local_tries_run_as_written",
    ("docs/actions.md", "yaml", "actions:"): FLOWS,
    ("docs/actions.md", "bash", "gatehook actions create -t acme groups-claim"): "not run: the"
    " target is the reader's endpoint; a target's publish and test are"
    " tests/e2e/test_targets.py's",
    ("docs/console.md", "bash", "GATEHOOK_NATS_URL="): "tests/e2e/test_console.py::"
    "test_console_manages_actions_and_flows_end_to_end (the console's app, as the command"
    " serves it)",
    ("docs/contract.md", "json", '{\n  "request_id": "4b7c...",          // required'): "checked"
    " here: a trigger request",
    ("docs/contract.md", "json", '{\n  "request_id": "4b7c...",\n  "decision"'): "checked"
    " here: a trigger reply",
    ("docs/contract.md", "ts", "export async function execute(input) {"): "not run: the"
    " shape of a module-style script; tests/e2e/test_doc_examples.py runs a whole one",
    ("docs/contract.md", "ts", "export async function execute(input: gatehook.Input)"): "not"
    " run: the shape of a typed script; docs/actions.md's risky.ts is one run whole",
    ("docs/contract.md", "json", '{"record_id"'): "checked here: a decision record",
    ("docs/contract.md", "python", "_FROM_RECORD"): "tests/unit/test_decision_record.py::"
    "test_the_contract_shows_the_example_as_it_runs",
    ("docs/contract.md", "json", '{"event_id"'): "checked here: an audit event",
    ("docs/contract.md", "yaml", "tenant: acme"): FLOWS,
    ("docs/contract.md", "yaml", "- name: domains"): FLOWS,
    ("docs/contract.md", "yaml", "actions:"): FLOWS,
    ("docs/contract.md", "json", '{"function": "function/preaccesstoken"'): "not run: a body"
    " with its parts elided; tests/e2e/test_targets.py checks the payload a target receives",
    ("docs/contract.md", "json", '{"type": "flow.target_circuit_opened"'): "not run: an event"
    " with its times elided; tests/e2e/test_targets.py reads the events a breaker writes",
    ("docs/contract.md", "yaml", "flows:"): FLOWS,
    ("docs/contract.md", "json", '{"sealed"'): "not run: a sealed value's shape;"
    " tests/unit/test_secrets.py seals and opens them",
    ("docs/contract.md", "yaml", "ingress:"): FLOWS,
    ("docs/deployment.md", "bash", "helm install"): "not run: needs a Kubernetes cluster; the"
    " chart is rendered and validated by tests/deploy/test_helm.py",
    ("docs/flows.md", "bash", "export GATEHOOK_NATS_URL"): "not run as one script: a list of"
    " commands, each checked by tests/unit/test_docs.py::"
    "test_every_command_shown_exists_with_its_options",
    ("docs/flows.md", "yaml", "tenant: acme"): FLOWS,
    ("docs/flows.md", "bash", "gatehook apply -f examples/acme/tenant.yaml"): EXAMPLES_RUN
    + "test_the_flows_guides_apply_runs_as_written",
    ("docs/flows.md", "text", "error: tenant.yaml"): "tests/e2e/test_cli.py::"
    "test_apply_says_every_problem_of_a_file_at_once",
    ("docs/integrations/README.md", "python", "import asyncio"): "tests/e2e/test_roles.py::"
    "test_the_python_client_example_runs_as_the_login_role",
    ("docs/integrations/README.md", "go", "nc, err := nats.Connect("): EXAMPLES_RUN
    + "test_the_go_client_example_runs_as_the_login_role",
    ("docs/integrations/README.md", "ts", "const nc = await connect("): EXAMPLES_RUN
    + "test_the_typescript_client_example_runs_as_the_login_role",
    ("docs/integrations/README.md", "", "ZITADEL (Actions v2 target)"): "not run: a diagram",
    ("docs/integrations/README.md", "bash", "GATEHOOK_NATS_URL=nats://gatehook-gateway"): "not"
    " run: a deployment's command (its password); tests/e2e/test_gateway.py serves the same",
    ("docs/integrations/auth0.md", "bash", "gatehook import auth0 export"): "tests/e2e/"
    "test_auth0.py::test_a_deploy_cli_export_imports_into_a_file_apply_takes",
    ("docs/integrations/hydra.md", "yaml", "oauth2:"): "tests/e2e/test_hydra.py::"
    "test_client_credentials_carry_gatehooks_claims (read from the page)",
    ("docs/integrations/hydra.md", "yaml", "ingress:"): FLOWS,
    ("docs/integrations/keycloak.md", "bash", "mvn -q -B -f clients/keycloak/pom.xml"): "run"
    " by scripts/install-keycloak, as written, before the Keycloak tests",
    ("docs/integrations/keycloak.md", "bash", "cp clients/keycloak/target"): "tests/"
    "keycloak.py copies the JAR into providers/ the same way; tests/e2e/test_keycloak.py::"
    "test_an_allowed_user_signs_in_with_gatehooks_claims",
    ("docs/integrations/keycloak.md", "bash", "export GATEHOOK_CONSOLE_TOKEN"): "not run:"
    " needs Docker; tests/deploy/test_compose.py::"
    "test_keycloak_compose_validates_and_matches_the_extension",
    (
        "docs/integrations/keycloak.md",
        "bash",
        "kc.sh start --optimized",
    ): "tests/support/keycloak.py"
    " starts Keycloak with these --spi-authenticator--gatehook-- options;"
    " tests/e2e/test_keycloak.py::test_keycloak_as_the_compose_files_nats_role",
    (
        "docs/integrations/keycloak.md",
        "",
        "POST   /{realm}",
    ): "tests/support/keycloak.py makes these"
    " admin REST calls; tests/e2e/test_keycloak.py::"
    "test_an_allowed_user_signs_in_with_gatehooks_claims",
    ("docs/integrations/keycloak.md", "yaml", "actions:"): FLOWS,
    ("docs/integrations/kratos.md", "jsonnet", "function(ctx) {"): "tests/e2e/test_kratos.py::"
    "test_registration_allowed_changed_and_blocked (read from the page)",
    ("docs/integrations/kratos.md", "yaml", "selfservice:"): "tests/e2e/test_kratos.py::"
    "test_registration_allowed_changed_and_blocked (read from the page)",
    ("docs/integrations/kratos.md", "yaml", "ingress:"): FLOWS,
    ("docs/integrations/okta.md", "bash", 'curl -sS -X POST "$OKTA'): "not run: Okta's admin"
    " API (a service of its own); tests/e2e/test_gateway.py calls the routes as Okta does",
    ("docs/integrations/okta.md", "yaml", "ingress:"): FLOWS,
    ("docs/integrations/zitadel.md", "bash", 'curl -sS -X POST "$ZITADEL'): "not run:"
    " ZITADEL's API (a service of its own); tests/e2e/test_gateway.py calls as ZITADEL does",
    ("docs/integrations/zitadel.md", "yaml", "ingress:"): FLOWS,
    ("docs/integrations/zitadel.md", "bash", "body='{"): "tests/e2e/test_gateway.py::"
    "test_the_guides_signed_call_runs_as_written",
    ("docs/integrations/zitadel.md", "bash", "# token and userinfo claims"): "not run:"
    " ZITADEL's API (a service of its own)",
    ("docs/integrations/zitadel.md", "yaml", "actions:"): FLOWS,
    ("docs/safe-change.md", "yaml", "flows:"): EXAMPLES_RUN
    + "test_the_safe_change_guides_commands_run_as_written",
    ("docs/safe-change.md", "bash", "gatehook rollout status"): EXAMPLES_RUN
    + "test_the_safe_change_guides_commands_run_as_written",
}
MODELS: dict[str, type[BaseModel]] = {
    "checked here: a trigger request": TriggerRequest,
    "checked here: a trigger reply": TriggerReply,
    "checked here: a decision record": DecisionRecord,
    "checked here: an audit event": AuditEvent,
}


def blocks() -> list[tuple[tuple[str, str, str], str]]:
    """Every fenced block: (file, language, its text), with its text."""
    out = []
    for doc in DOCS:
        name = str(doc.relative_to(ROOT))
        for language, body in FENCE.findall(doc.read_text()):
            out.append(((name, language, body), body))
    return out


def owner(name: str, language: str, body: str) -> tuple[str, str, str] | None:
    """The EXAMPLES key that names this block (the longest start that matches)."""
    text = body.strip()
    keys = [k for k in EXAMPLES if k[:2] == (name, language) and text.startswith(k[2])]
    return max(keys, key=lambda k: len(k[2])) if keys else None


def of(kind: str) -> list[str]:
    """The blocks ``EXAMPLES`` says are ``kind``."""
    return [
        body
        for (name, language, _), body in blocks()
        if (key := owner(name, language, body)) is not None and EXAMPLES[key] == kind
    ]


def test_every_block_is_run_checked_or_said_why_not() -> None:
    unaccounted = [
        f"{name} ({language or 'plain'}): {body.strip().splitlines()[0][:60]}"
        for (name, language, body), _ in blocks()
        if owner(name, language, body) is None
    ]
    assert not unaccounted, "run it in a test, or say why not, in EXAMPLES: " + str(unaccounted)
    used = {owner(n, lang, b) for (n, lang, b), _ in blocks()}
    assert not set(EXAMPLES) - used, f"no block of the guides starts so: {set(EXAMPLES) - used}"


def test_every_test_named_exists() -> None:
    missing = []
    for where in EXAMPLES.values():
        for file, name in re.findall(r"(tests/[\w/]+\.py)::(\w+)", where):
            source = (ROOT / file).read_text()
            if not re.search(rf"^(async )?def {name}\(", source, re.M):
                missing.append(f"{file}::{name}")
    assert not missing, missing


@pytest.mark.parametrize("body", of(FLOWS), ids=lambda b: b.strip().splitlines()[0][:40])
def test_a_flows_file_shown_is_a_valid_one(body: str) -> None:
    raw: Any = load_yaml(body)
    if isinstance(raw, list):  # an action's entry, shown alone
        raw = {"actions": raw}
    FlowsFile.model_validate(raw)


def _json(body: str) -> Any:
    """A JSON example with its ``// comments`` (after a value and two spaces) dropped."""
    lines = [re.sub(r"\s{2,}//.*$", "", line) for line in body.splitlines()]
    return json.loads("\n".join(lines))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_message_shown_is_a_valid_one(kind: str) -> None:
    shown = of(kind)
    assert shown
    for body in shown:
        MODELS[kind].model_validate(_json(body))


def test_each_benchmarks_command_runs_with_its_options() -> None:
    for body in of(BENCH):
        command = body.split("#")[0].split()
        assert command[:2] == [".venv/bin/python", command[1]]
        script = ROOT / command[1]
        assert script.is_file(), command[1]
        options = [arg.split("=")[0] for arg in command[2:] if arg.startswith("--")]
        if options:
            done = subprocess.run(
                [sys.executable, str(script), "--help"],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=ROOT,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            for option in options:
                assert option in done.stdout, f"{command[1]} has no {option}"
