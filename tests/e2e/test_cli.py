"""The `gatehook` command as people run it (subprocesses against a real worker)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from gatehook.settings import Settings
from tests.support.processes import cli
from tests.support.workers import Worker

ROOT = Path(__file__).resolve().parents[2]


async def test_apply_list_flows_and_trigger(
    worker: Worker, settings: Settings, tenant: str
) -> None:
    example = str(ROOT / "examples" / "acme" / "tenant.yaml")
    dry = await cli(settings, "apply", "-f", example, "-t", tenant, "--dry-run")
    assert "create action staff-only" in dry.stdout
    applied = await cli(settings, "apply", "-f", example, "-t", tenant, "-t", tenant + "-2")
    assert applied.stdout.count("publish add-year-claim 1.0.0") == 2
    again = await cli(settings, "apply", "-f", example, "-t", tenant)
    assert "up to date" in again.stdout
    listed = await cli(settings, "actions", "list", "-t", tenant, "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["staff-only"]["attached"] == 1
    assert rows["tagIdp"]["kind"] == "custom"
    flows = await cli(settings, "flows", "show", "-t", tenant, "-f", "external_authentication")
    assert "add-year-claim" in flows.stdout
    reply = json.loads(
        (
            await cli(settings, "trigger", tenant, "external_authentication", "post_authentication")
        ).stdout
    )
    assert reply["decision"] == "continue"
    assert reply["claims"]["idp"] == "okta"
    bad = await cli(
        settings,
        "flows",
        "pin",
        "-t",
        tenant,
        "-f",
        "external_authentication",
        "--trigger",
        "post_authentication",
        "staff-only",
        "9.9.9",
        check=False,
    )
    assert bad.returncode == 2
    assert "9.9.9" in bad.stderr


async def test_trigger_says_an_error_reply_and_a_bad_file_in_its_exit_code(
    worker: Worker, settings: Settings, tenant: str, tmp_path: Path
) -> None:
    slot = ("external_authentication", "post_authentication")
    refused = await cli(settings, "trigger", tenant, "external_authentication", "nope", check=False)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "bad_request"
    broken = tmp_path / "request.json"
    broken.write_text('{"request_id": "r1",\n "user": }')
    bad = await cli(settings, "trigger", tenant, *slot, "--file", str(broken), check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    assert "is not JSON" in bad.stderr
    assert "line 2" in bad.stderr
    missing = await cli(
        settings, "trigger", tenant, *slot, "--file", str(tmp_path / "none.json"), check=False
    )
    assert missing.returncode == 2
    assert "cannot read request" in missing.stderr
    config = await cli(
        Settings(),
        "actions",
        "test",
        str(ROOT / "examples/acme/actions/tag_idp.js"),
        "--config",
        str(broken),
        check=False,
    )
    assert config.returncode == 2
    assert "config" in config.stderr
    assert "Traceback" not in config.stderr


async def test_actions_test_runs_locally(tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "request_id": "r1",
                "user": {"id": "u7"},
                "context": {"providerInfo": {"name": "okta"}},
            }
        )
    )
    out = await cli(
        Settings(),
        "actions",
        "test",
        str(ROOT / "examples/acme/actions/tag_idp.js"),
        "--input",
        str(request),
    )
    assert "style: zitadel" in out.stdout
    assert "info: sign-in through okta" in out.stdout
    assert '"idp": "okta"' in out.stdout
    ts = await cli(
        Settings(), "actions", "test", str(ROOT / "examples/acme/actions/add_year_claim.ts")
    )
    assert '"acme:uid"' in ts.stdout
    hostile = tmp_path / "spin.js"
    hostile.write_text("export function execute() { while (true) {} }")
    failed = await cli(
        Settings(), "actions", "test", str(hostile), "--timeout-ms", "100", check=False
    )
    assert failed.returncode == 1
    assert "timed out" in failed.stderr


async def test_the_local_stack_runs_the_production_roles() -> None:
    """`gatehook dev --once` (what ./scripts/dev runs): its own servers, NATS with
    deploy/nats.conf's roles; the worker, the operator (apply) and the login service
    (triggers) each as their own user, and real decisions."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEHOOK_") or k == "GATEHOOK_TEST_MONGODB_URL"
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatehook", "dev", "--once"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        timeout=180,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "with the roles of nats-roles.conf" in out.stdout
    assert "ann@acme.com signs in through Okta -> continue" in out.stdout
    assert "eve@evil.example signs in -> block (domain_not_allowed)" in out.stdout
    assert "-> demand_mfa (risk_elevated)" in out.stdout


def test_a_bad_setting_ends_a_command_with_its_name() -> None:
    env = {
        **os.environ,
        "GATEHOOK_SANDBOX__POOL_SIZE": "0",
        "GATEHOOK_LOG_FORMAT": "xml",
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "gatehook", "worker"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "GATEHOOK_SANDBOX__POOL_SIZE: Input should be greater than or equal to 1" in out.stderr
    assert "(got '0')" in out.stderr
    assert "GATEHOOK_LOG_FORMAT: Input should be 'text' or 'json'" in out.stderr
    assert "Traceback" not in out.stderr


async def test_apply_says_every_problem_of_a_file_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    """A flows file with three mistakes: one run names all three, where each is (the action
    by its name), and the name each misspelling meant, as docs/flows.md shows; nothing is
    sent (exit code 2)."""
    file = tmp_path / "tenant.yaml"
    file.write_text(
        "tenant: acme\n"
        "actions:\n"
        "  - {name: staff-only, template: domain-allowlist, timeout: 300}\n"
        "  - {name: gate, sourc: 'export function execute() {}'}\n"
        "flows:\n"
        "  external_authentication:\n"
        "    post_authenticaton: [staff-only@latest]\n"
    )
    out = await cli(settings, "apply", "-f", str(file), "--dry-run", check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    # exactly what docs/flows.md shows
    guide = (ROOT / "docs" / "flows.md").read_text()
    start = guide.index("```text\n", guide.index("A file that does not fit it")) + 8
    shown = guide[start : guide.index("```", start)].replace("tenant.yaml", str(file))
    assert out.stderr.splitlines() == shown.splitlines(), out.stderr
