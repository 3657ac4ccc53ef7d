"""The pure part of target actions: signature, ZITADEL payload, response mapping, breaker."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehook.domain.targets import (
    TargetResponseError,
    TargetSpec,
    function_name,
    map_response,
    signature,
    verify_signature,
    zitadel_payload,
)
from gatehook.transport.targets import Breaker


def test_signature_is_zitadels_scheme() -> None:
    # t=<unix seconds>,v1=hex(HMAC-SHA256(key, "<t>.<body>")); the value below was computed
    # with `printf '1700000000.{}' | openssl dgst -sha256 -hmac key`
    assert signature("key", 1700000000, b"{}") == (
        "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
    )
    header = signature("key", 1700000000, b'{"a":1}')
    assert verify_signature(header, b'{"a":1}', "key")
    assert not verify_signature(header, b'{"a":2}', "key")
    assert not verify_signature(header, b'{"a":1}', "other")


@given(st.binary(max_size=200), st.text(min_size=1, max_size=40), st.integers(0, 2**33))
def test_signature_round_trip(body: bytes, key: str, t: int) -> None:
    assert verify_signature(signature(key, t, body), body, key)


def test_function_names() -> None:
    assert function_name("complement_token", "pre_userinfo_creation") == "function/preuserinfo"
    assert function_name("complement_token", "pre_access_token_creation") == (
        "function/preaccesstoken"
    )
    assert function_name("customize_saml_response", "pre_saml_response") == (
        "function/presamlresponse"
    )
    assert function_name("internal_authentication", "pre_creation") == (
        "internal_authentication.pre_creation"
    )


def test_payload_from_the_input() -> None:
    payload = zitadel_payload(
        {
            "flow_type": "complement_token",
            "trigger": "pre_access_token_creation",
            "user": {"id": "u1", "metadata": {"a": "x", "n": [1]}, "grants": [{"projectId": "p"}]},
            "context": {"org": {"id": "o"}},
        }
    )
    assert payload["function"] == "function/preaccesstoken"
    assert payload["user_metadata"] == [
        {"key": "a", "value": base64.b64encode(b"x").decode()},
        {"key": "n", "value": base64.b64encode(b"[1]").decode()},
    ]
    assert payload["user_grants"] == [{"project_id": "p"}]
    assert payload["org"] == {"id": "o"}
    assert payload["userinfo"] is None


def test_bad_responses_are_errors() -> None:
    with pytest.raises(TargetResponseError):
        map_response("f", {"append_claims": "no"})
    with pytest.raises(TargetResponseError):
        map_response("f", {"set_user_metadata": [{"key": "k", "value": "%%%"}]})
    with pytest.raises(TargetResponseError):
        map_response("f", {"append_claims": [{"value": 1}]})
    assert map_response("f", ["an", "array"]).kind == "continue"
    assert map_response("f", {"forwardedStatusCode": 302}).kind == "continue"


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=5))
def test_any_object_without_known_fields_is_continue(body: dict[str, object]) -> None:
    known = {"append_claims", "set_user_metadata", "append_log_claims", "append_attribute"}
    body = {k: v for k, v in body.items() if k not in known and k != "forwardedStatusCode"}
    out = map_response("f", body)
    assert (out.kind, out.claims, out.metadata) == ("continue", {}, [])


def test_spec_refuses_bad_endpoints_and_headers() -> None:
    with pytest.raises(ValueError, match="absolute http"):
        TargetSpec(endpoint="file:///etc/passwd")
    with pytest.raises(ValueError, match="set by gatehook"):
        TargetSpec(endpoint="https://x.example", headers={"ZITADEL-Signature": "forged"})
    with pytest.raises(ValueError, match="one line"):
        TargetSpec(endpoint="https://x.example", headers={"X-A": "a\r\nInjected: 1"})


def test_breaker_opens_probes_once_and_closes() -> None:
    b = Breaker(failures=3, cooldown_s=10)
    key = ("t", "https://x")
    assert [b.failure(key, 0.0) for _ in range(3)] == [False, False, True]
    assert not b.allow(key, 5.0)  # open
    assert b.allow(key, 10.0)  # one probe after the cool-down
    assert not b.allow(key, 10.0)  # and only one
    assert b.failure(key, 10.5)  # the probe failed: open again
    assert not b.allow(key, 15.0)
    assert b.allow(key, 20.6)
    assert b.success(key)  # closed
    assert b.allow(key, 20.7)
    assert not b.success(key)  # already closed: no second event
