"""The publish's package check reads the script's syntax (TypeScript's parser in the compile
child): a module named in a string, a comment or a template literal is no require; a real
one is refused with its line and column; a name computed at run time is the runtime's to
refuse."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from gatehook.admin.client import AdminClient
from gatehook.errors import ValidationFailed
from tests.support.tenants import request, trigger
from tests.support.workers import Worker

PA = {"flow_type": "external_authentication", "trigger": "post_authentication"}
RESULT = "export function execute() { return {kind: 'continue'}; }"


@pytest.fixture
def api(nc: NATS) -> AdminClient:
    return AdminClient(nc, actor="alice", timeout=60)


@pytest.mark.parametrize(
    ("source", "language"),
    [
        ("const hint = \"do not require('fs')\";\n" + RESULT, "js"),
        ("// we never require('fs')\n" + RESULT, "js"),
        ("/* import x from 'lodash' */\n" + RESULT, "js"),
        ("const t = `require('child_process') ${1}`;\n" + RESULT, "js"),
        ("const hint: string = \"require('fs')\";\n" + RESULT, "ts"),
        # a type-only import is erased by the compiler: it loads nothing
        ("import type { Foo } from 'some-types';\n" + RESULT, "ts"),
        # ZITADEL's modules are the runtime's own
        ("const http = require('zitadel/http');\n" + RESULT, "js"),
    ],
)
async def test_names_that_are_no_require_publish(
    worker: Worker, api: AdminClient, tenant: str, source: str, language: str
) -> None:
    await api.call(tenant, "actions.create", name="a")
    published = await api.call(
        tenant, "actions.publish", name="a", source=source, language=language
    )
    assert published["created"] is True


@pytest.mark.parametrize(
    ("source", "language", "where"),
    [
        ("const x = 1;\nconst axios = require('axios');\n" + RESULT, "js", "line 2, column 15"),
        ("import _ from 'lodash';\n" + RESULT, "js", "line 1, column 1"),
        ("\n\nimport * as fs from 'fs';\n" + RESULT, "ts", "line 3, column 1"),
        (RESULT + "\nasync function later() { return import('os'); }", "js", "line 2, column 33"),
        # an Auth0 Action whose top level requires it: named, not "could not be loaded"
        (
            "const axios = require('axios');\nexports.onExecutePostLogin = async () => {};",
            "js",
            "line 1, column 15",
        ),
    ],
)
async def test_a_required_package_is_refused_where_it_is(
    worker: Worker, api: AdminClient, tenant: str, source: str, language: str, where: str
) -> None:
    await api.call(tenant, "actions.create", name="a")
    with pytest.raises(ValidationFailed, match=r"npm packages are not supported") as refused:
        await api.call(tenant, "actions.publish", name="a", source=source, language=language)
    assert f"({where})" in refused.value.message
    assert (await api.call(tenant, "actions.show", name="a"))["versions"] == []


async def test_a_computed_name_is_refused_when_the_script_runs(
    worker: Worker, nc: NATS, api: AdminClient, tenant: str
) -> None:
    source = (
        "export function execute() {\n"
        "  const name = ['ax', 'ios'].join('');\n"
        "  require(name);\n"
        "  return {kind: 'continue'};\n"
        "}"
    )
    await api.call(tenant, "actions.create", name="a")
    await api.call(tenant, "actions.publish", name="a", source=source)
    await api.call(tenant, "flows.attach", action="a", **PA)
    reply = await trigger(nc, tenant, request())
    assert reply["decision"] == "block"  # fails closed
    assert "Cannot find module 'axios'" in reply["actions"][0]["error"]
