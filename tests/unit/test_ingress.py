"""The gateway's pure checks: ZITADEL's signature scheme and shared-secret headers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehook.domain.ingress import (
    MASK,
    IngressSpec,
    merge_masked,
    shared_secret_refusal,
    zitadel_signature_refusal,
)
from gatehook.domain.providers.zitadel import FUNCTIONS, USER_CREATION
from gatehook.domain.targets import signature

keys = st.text(min_size=8, max_size=40)


@given(body=st.binary(max_size=512), key=keys, other=keys, now=st.integers(10**6, 2 * 10**9))
def test_zitadel_signature_signs_its_body_only(body: bytes, key: str, other: str, now: int) -> None:
    header = signature(key, now, body)  # as gatehook's own targets (and ZITADEL) sign
    assert zitadel_signature_refusal(header, body, [other, key], now + 299) is None
    assert zitadel_signature_refusal(header, body + b"x", [key], now) is not None
    assert zitadel_signature_refusal(header, body, [key], now + 301) is not None
    if other != key:
        assert zitadel_signature_refusal(header, body, [other], now) is not None


def test_zitadel_signature_accepts_any_of_several_v1() -> None:
    body, key, t = b'{"a":1}', "k" * 16, 1_700_000_000
    good = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    header = f"t={t},v1={'0' * 64},v1={good}"
    assert zitadel_signature_refusal(header, body, [key], t) is None
    for bad in ("", "t=x,v1=ab", f"v1={good}", f"t={t}"):
        assert zitadel_signature_refusal(bad, body, [key], t) is not None


@given(value=st.text(max_size=40), key=keys)
def test_shared_secret(value: str, key: str) -> None:
    assert shared_secret_refusal(key, [key], "Authorization") is None
    assert shared_secret_refusal(f"Bearer {key}", [key], "Authorization") is None
    if value not in (key, f"Bearer {key}") and not (
        value[:7].lower() == "bearer " and value[7:] == key
    ):
        assert shared_secret_refusal(value, [key], "Authorization") is not None


def test_masked_secrets_keep_the_stored_ones() -> None:
    stored = {"zitadel": {"secrets": ["first-key-1", "second-key-2"]}}
    spec = IngressSpec.model_validate({"zitadel": {"signing_keys": [MASK, "new-key-333"]}})
    assert merge_masked(spec.providers(), stored) == {
        "zitadel": {"secrets": ["first-key-1", "new-key-333"]}
    }
    spec = IngressSpec.model_validate({"okta": {"api_keys": [MASK]}})
    with pytest.raises(ValueError, match="masked, none is stored"):
        merge_masked(spec.providers(), stored)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
# bodies of the providers' shapes with any value anywhere
_FIELDS = (
    "request", "response", "user", "userinfo", "user_metadata", "user_grants", "org",
    "application", "headers", "event_type", "flow", "identity", "request_headers", "data",
    "eventType", "actor",
)  # fmt: skip
_MESSAGE = ("metadata", "profile", "email", "username", "userName", "human", "userId")
_OKTA = ("context", "identity", "access", "userProfile", "action")
shaped = st.fixed_dictionaries(
    {},
    optional={
        "function": st.sampled_from(sorted(FUNCTIONS)) | json_values,
        "fullMethod": st.sampled_from(sorted(USER_CREATION)) | json_values,
        **dict.fromkeys(_FIELDS, json_values),
        "request": json_values | st.dictionaries(st.sampled_from(_MESSAGE), json_values),
        "user": json_values
        | st.dictionaries(st.sampled_from(["id", "human", "machine"]), json_values),
        "data": json_values
        | st.dictionaries(
            st.sampled_from(_OKTA),
            json_values
            | st.dictionaries(
                st.sampled_from(["claims", "user", "request", "protocol", "session", "profile"]),
                json_values,
            ),
        ),
    },
)
replies = st.fixed_dictionaries(
    {"decision": st.sampled_from(["continue", "block", "demand_mfa", "redirect"])},
    optional={
        "claims": st.dictionaries(st.text(max_size=30), json_values, max_size=3),
        "user_updates": st.dictionaries(
            st.sampled_from(["first_name", "last_name", "email", "username", "x"]), json_values
        ),
        "metadata": st.lists(
            st.fixed_dictionaries({"key": st.text(min_size=1), "value": json_values})
        ),
        "saml_attributes": st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=8))),
        "message": st.text(max_size=20),
        "error": st.none()
        | st.fixed_dictionaries(
            {
                "code": st.sampled_from(["bad_request", "unavailable"]),
                "message": st.text(max_size=10),
            }
        ),
    },
)


@settings(max_examples=400, deadline=None)
@given(body=shaped | st.dictionaries(st.text(max_size=8), json_values), reply=replies)
def test_provider_mappings_take_any_json(body: dict[str, object], reply: dict[str, object]) -> None:
    """Any JSON object is mapped or refused as ``Malformed``; answers are JSON-serialisable."""
    import json

    from gatehook.domain.providers import Answer, Malformed, kratos, okta, zitadel

    def check(answer: Answer) -> None:
        json.dumps(answer.body)
        assert 200 <= answer.status < 600

    for ask_of, answer_of in (
        (zitadel.ask, lambda b, r: zitadel.answer(b, r)),
        (lambda b: kratos.ask("internal_authentication", "pre_creation", b), kratos.answer),
        (okta.registration_ask, lambda b, r: okta.registration_answer(r)),
    ):
        try:
            ask = ask_of(body)
        except Malformed:
            continue
        json.dumps(ask.request, default=str)
        check(answer_of(body, reply))
    try:
        asks = okta.token_asks(body)  # (two asks, answered alike)
    except Malformed:
        return
    check(okta.token_answer(body, [reply for _ in asks]))


def test_odd_values_where_lists_belong() -> None:
    from gatehook.domain.providers import zitadel

    method = "/zitadel.user.v2.UserService/AddHumanUser"
    call = {"fullMethod": method, "request": {"metadata": 5, "email": {}}}
    ask = zitadel.ask(call)
    assert ask.request["user"]["metadata"] == {}
    reply = {"decision": "continue", "metadata": [{"key": "k", "value": "v"}]}
    assert zitadel.answer(call, reply).body["metadata"] == [{"key": "k", "value": "dg=="}]


def test_grants_in_either_of_zitadels_spellings() -> None:
    from gatehook.domain.providers import zitadel

    for grant in (
        {"project_id": "p1", "roles": ["a"], "grant_id": "pg", "org_name": "Acme"},
        {"ProjectID": "p1", "Roles": ["a"], "GrantID": "pg", "OrgName": "Acme"},
    ):
        ask = zitadel.ask({"function": "function/preuserinfo", "user_grants": [grant]})
        assert ask.request["user"]["grants"] == [
            {
                "projectId": "p1",
                "roles": ["a"],
                "projectGrantId": "pg",
                "userGrantResourceOwnerName": "Acme",
            }
        ]
