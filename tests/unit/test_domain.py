"""Pure pieces: semver, the catalogue, the flows file, the SSRF address check, templates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gatehook.domain.catalogue import all_slots, is_valid_slot
from gatehook.domain.contract import ActionInput, ActionOutput, RequestInfo, TriggerRequest, User
from gatehook.domain.flowfile import FlowsFile, parse_ref
from gatehook.domain.semver import Version
from gatehook.errors import ValidationFailed
from gatehook.sandbox.netguard import address_is_public, host_allowed
from gatehook.templates import default_registry


def test_semver() -> None:
    assert Version.parse("1.2.3") < Version.parse("1.10.0")
    assert str(Version.parse("1.2.3").bump("minor")) == "1.3.0"
    assert str(Version.parse("1.2.3").bump("major")) == "2.0.0"
    for bad in ("1.2", "01.2.3", "1.2.3-beta", "v1.2.3", ""):
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
            Version.parse(bad)


def test_catalogue() -> None:
    assert is_valid_slot("complement_token", "pre_access_token_creation")
    assert not is_valid_slot("complement_token", "post_authentication")
    assert not is_valid_slot("nope", "post_authentication")
    assert len(all_slots()) == 9


def test_request_keeps_unknown_fields_for_context() -> None:
    req = TriggerRequest.model_validate({"request_id": "r", "idp": "okta", "context": {"a": 1}})
    assert req.action_context() == {"idp": "okta", "a": 1}


def test_action_output_validation() -> None:
    with pytest.raises(ValidationError, match="redirect_url"):
        ActionOutput.model_validate({"kind": "redirect"})
    with pytest.raises(ValidationError, match="absolute"):
        ActionOutput.model_validate({"kind": "redirect", "redirect_url": "/relative"})
    with pytest.raises(ValidationError):
        ActionOutput.model_validate({"kind": "allow"})
    with pytest.raises(ValidationError):
        ActionOutput.model_validate({"kind": "continue", "extra": 1})


def test_flows_file() -> None:
    assert parse_ref("a@latest") == ("a", "latest")
    assert parse_ref("a-b@1.0.0") == ("a-b", "1.0.0")
    with pytest.raises(ValueError, match="name@"):
        parse_ref("a")
    ok = FlowsFile.model_validate(
        {
            "tenant": "acme",
            "actions": [
                {"name": "x", "template": "domain-allowlist", "config": {"domains": ["a.com"]}}
            ],
            "flows": {"external_authentication": {"post_authentication": ["x@latest"]}},
        }
    )
    assert ok.tenant == "acme"
    with pytest.raises(ValidationError, match="exactly one"):
        FlowsFile.model_validate({"actions": [{"name": "x"}]})
    with pytest.raises(ValidationError, match="not a trigger"):
        FlowsFile.model_validate({"flows": {"complement_token": {"post_authentication": []}}})


@pytest.mark.parametrize(
    ("addr", "public"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),
        ("::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("100.64.0.1", False),
        ("2606:4700::1111", True),
    ],
)
def test_address_is_public(addr: str, public: bool) -> None:
    assert address_is_public(addr) is public


def test_host_allowed() -> None:
    assert host_allowed("api.acme.com", ("*.acme.com",))
    assert not host_allowed("acme.com", ("*.acme.com",))
    assert not host_allowed("evilacme.com", ("*.acme.com",))
    assert host_allowed("ACME.com.", ("acme.com",))


def _inp(**user: object) -> ActionInput:
    return ActionInput(
        tenant="t",
        flow_type="external_authentication",
        trigger="post_authentication",
        request_id="r",
        user=User.model_validate(user),
        request=RequestInfo(risk_score=0.9),
    )


async def test_pure_templates() -> None:
    reg = default_registry()
    allow = reg.get("domain-allowlist")
    assert allow is not None
    cfg = allow.parse_config({"domains": ["ACME.com"], "include_subdomains": True})
    assert (await allow.run(_inp(email="a@eu.acme.com"), cfg, object())).kind == "continue"
    assert (await allow.run(_inp(email="a@evil.com"), cfg, object())).kind == "block"
    assert (await allow.run(_inp(), cfg, object())).reason == "email_required"
    with pytest.raises(ValidationFailed, match="domains"):
        allow.parse_config({"domains": []})
    with pytest.raises(ValidationFailed, match="unknown field `typo`"):
        allow.parse_config({"domains": ["a.com"], "typo": 1})
    risk = reg.get("demand-mfa-by-risk-score")
    assert risk is not None
    out = await risk.run(_inp(), risk.parse_config({"threshold": 0.5}), object())
    assert out.kind == "demand_mfa"
    deco = reg.get("decorate-token")
    assert deco is not None
    with pytest.raises(ValidationFailed, match="reserved"):
        deco.parse_config({"claims": {"sub": {"value": "x"}}})
    cfg2 = deco.parse_config({"claims": {"mail": {"path": "user.email"}, "c": {"value": 1}}})
    out = await deco.run(_inp(email="a@b.c"), cfg2, object())
    assert out.claims == {"mail": "a@b.c", "c": 1}
    red = reg.get("redirect-by-group")
    assert red is not None
    with pytest.raises(ValidationFailed, match="https"):
        red.parse_config({"rules": [{"group": "g", "url": "http://x.example"}]})
    cfg3 = red.parse_config({"rules": [{"group": "staff", "url": "https://x.example/s"}]})
    out = await red.run(_inp(groups=["staff"]), cfg3, object())
    assert (out.kind, out.redirect_url) == ("redirect", "https://x.example/s")
