"""The guides' examples, run as written against a real stack, as their reader runs them:
``gatehook`` on the PATH (``source .venv/bin/activate``), a shell, the NATS URLs of
deploy/nats-roles.conf's users that ``./scripts/dev`` prints (``PORT`` replaced by the
server's). Which example each test runs, and why the others are not run here, is in
tests/unit/test_doc_examples.py: a new example fails the suite until it is run or said why."""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehook.devservers import Server
from gatehook.sandbox import SandboxPool
from gatehook.settings import Settings
from tests.support.roles import GATEHOOK, ROOT, Done, role_stack, run

FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
BIN = str(Path(GATEHOOK).parent)


def example(doc: str, language: str, first: str) -> str:
    """The block of ``doc`` in ``language`` whose first line starts with ``first``."""
    for lang, body in FENCE.findall((ROOT / doc).read_text()):
        if lang == language and body.lstrip().startswith(first):
            return str(body)
    raise AssertionError(f"{doc} has no {language} block starting {first!r}")


async def shell(block: str, server: Server, cwd: Path, **env: str) -> Done:
    """``block`` run by bash (stopping at the first failing command), in ``cwd``."""
    script = block.replace("127.0.0.1:PORT", f"127.0.0.1:{server.port}")
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return await run(
        "bash", "-e", "-o", "pipefail", "-c", script, env={"PATH": path, **env}, cwd=cwd
    )


def ok(done: Done) -> str:
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def operator(server: Server) -> dict[str, str]:
    return {"GATEHOOK_NATS_URL": f"nats://acme-operator:operator-secret@127.0.0.1:{server.port}"}


@pytest.fixture
async def stack(settings: Settings, pool: SandboxPool) -> AsyncIterator[Server]:
    async with role_stack(settings, pool) as server:
        yield server


async def test_the_actions_guides_first_action_runs_as_written(
    stack: Server, tmp_path: Path
) -> None:
    """docs/actions.md, "A first action": the script saved as risky.ts, then the shell block:
    a local test, create, publish, attach as acme's operator, a trigger as its login service."""
    script = example("docs/actions.md", "ts", "// risky.ts")
    (tmp_path / "risky.ts").write_text(script)
    out = ok(await shell(example("docs/actions.md", "bash", "gatehook actions test risky.ts"),
                         stack, tmp_path))  # fmt: skip
    assert "risky published 1.0.0" in out
    assert '"acme:checked": true' in out


async def test_the_actions_guides_local_tries_run_as_written(stack: Server, tmp_path: Path) -> None:
    """docs/actions.md's scripts tried locally (no server), with a trigger request of the
    reader's own in request.json."""
    request = {"user": {"id": "u1", "email": "ann@acme.com"}, "request": {"ip": "198.51.100.7"}}
    (tmp_path / "request.json").write_text(json.dumps(request))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    block = example("docs/actions.md", "bash", "gatehook actions test examples/")
    out = ok(await shell(block, stack, tmp_path))
    assert '"signin_year"' in out  # add_year_claim.ts, on the built-in sample
    assert '"idp": "local"' in out  # tag_idp.js, on request.json


async def test_the_flows_guides_apply_runs_as_written(stack: Server) -> None:
    """docs/flows.md: the sample tenant's file, dry run then applied, as acme's operator."""
    block = example("docs/flows.md", "bash", "gatehook apply -f examples/acme/tenant.yaml")
    out = ok(await shell(block, stack, ROOT, **operator(stack)))
    assert "acme (plan):" in out
    assert "acme (applied):" in out
    assert "publish tagIdp 1.0.0" in out


async def test_the_safe_change_guides_commands_run_as_written(
    stack: Server, tmp_path: Path
) -> None:
    """docs/safe-change.md: its flows (a canary and a shadow) applied to versions published
    as its reader would have them, then each of its commands, as acme's operator."""
    env = operator(stack)
    script = "export async function execute(input) { return { kind: 'continue' }; }\n"
    for n, (action, versions) in enumerate({"gate": 3, "tier": 2}.items()):
        (tmp_path / f"{action}.js").write_text(
            script.replace("continue'", f"continue', reason: '{n}'")
        )
        setup = [f"gatehook actions create -t acme {action}"]
        setup += [
            f"gatehook actions publish -t acme {action} --file {action}.js --version 1.{v}.0"
            for v in range(versions)
        ]
        ok(await shell("\n".join(setup), stack, tmp_path, **env))
    (tmp_path / "flows.yaml").write_text(example("docs/safe-change.md", "yaml", "flows:"))
    ok(await shell("gatehook apply -f flows.yaml -t acme", stack, tmp_path, **env))
    block = example("docs/safe-change.md", "bash", "gatehook rollout status -t acme")
    out = ok(await shell(block, stack, tmp_path, **env))
    assert "running" in out  # the status table: the canary and the shadow
    assert "gate: promoted" in out
    assert "gate disabled (fallback: block)" in out
    assert "recorded (redacted: user.email)" in out
    assert "replayed against gate@1.2.0" in out


GO_MAIN = """package main

import (
\t"context"
\t"fmt"
\t"time"

\tgatehook "github.com/gatehook/gatehook/clients/go"
\t"github.com/nats-io/nats.go"
)

func main() {
\tctx := context.Background()
EXAMPLE
\tif err != nil {
\t\tpanic(err)
\t}
\tfmt.Println(*reply.Decision)
\tnc.Close()
}
"""


async def test_the_go_client_example_runs_as_the_login_role(stack: Server, tmp_path: Path) -> None:
    """docs/integrations/README.md's Go lines, in a main of their own (the imports and a
    context, what the page leaves out), built against clients/go, as acme's login service."""
    go = shutil.which("go")
    assert go is not None, "the Go example needs Go on PATH (the machine's toolchain)"
    lines = example("docs/integrations/README.md", "go", "nc, err := nats.Connect(")
    lines = lines.replace("127.0.0.1:4222", f"127.0.0.1:{stack.port}")
    (tmp_path / "main.go").write_text(GO_MAIN.replace("EXAMPLE", lines.rstrip()))
    client = ROOT / "clients" / "go"
    mod = (
        (client / "go.mod")
        .read_text()
        .replace("module github.com/gatehook/gatehook/clients/go", "module docexample")
    )
    mod += (
        "\nrequire github.com/gatehook/gatehook/clients/go v0.0.0\n"
        f"replace github.com/gatehook/gatehook/clients/go => {client}\n"
    )
    (tmp_path / "go.mod").write_text(mod)
    shutil.copy(client / "go.sum", tmp_path / "go.sum")
    done = await run(go, "run", ".", cwd=tmp_path, env={"GOFLAGS": "-mod=mod"}, timeout=600)
    assert ok(done).split() == ["continue"]


async def test_the_typescript_client_example_runs_as_the_login_role(stack: Server) -> None:
    """docs/integrations/README.md's TypeScript lines, in a module with the imports the page
    leaves out, on clients/ts built as the page says, as acme's login service."""
    npm = shutil.which("npm")
    ts = ROOT / "clients" / "ts"
    assert npm is not None, "the TypeScript example needs Node 20 and npm"
    assert (ts / "node_modules").is_dir(), "scripts/bootstrap runs `npm ci` in clients/ts"
    ok(await run(npm, "run", "build", cwd=ts, timeout=600))
    lines = example("docs/integrations/README.md", "ts", "const nc = await connect(")
    lines = lines.replace('servers: "127.0.0.1:4222"', f'servers: "127.0.0.1:{stack.port}"')
    module = ts / f".doc-example-{uuid.uuid4().hex}.mjs"  # beside its node_modules
    module.write_text(
        'import { connect } from "@nats-io/transport-node";\n'
        'import { GatehookClient } from "./dist/src/index.js";\n'
        f"{lines}console.log(reply.decision);\nawait nc.close();\n"
    )
    try:
        done = await run("node", str(module), cwd=ts)
    finally:
        module.unlink()
    assert ok(done).split() == ["continue"]
