"""Template config forms: fields from each template's JSON Schema, and the config back."""

from __future__ import annotations

from typing import Any

import pytest

from gatehook.console import forms
from gatehook.templates import default_registry

CONFIGS: dict[str, dict[str, Any]] = {
    "domain-allowlist": {"domains": ["acme.com", "acme.org"], "include_subdomains": True},
    "domain-blocklist": {"domains": ["evil.test"], "block_without_email": False},
    "block-by-risk-score": {"threshold": 0.75, "when_missing": "act", "message": "no"},
    "demand-mfa-by-risk-score": {"threshold": 0.5},
    "rate-limit-by-ip": {"limit": 5, "window_s": 60, "ipv4_prefix": 24},
    "rate-limit-by-user": {"limit": 3, "window_s": 60, "by": "username"},
    "redirect-by-group": {"rules": [{"group": "contractors", "url": "https://x.example/c"}]},
    "decorate-token": {"claims": {"org": {"path": "context.org.id"}, "tier": {"value": "gold"}}},
    "webhook-emit": {"url": "https://hooks.example.com/in", "headers": {"x-team": "id"}},
    "slack-notify": {"webhook_url": "https://hooks.slack.com/services/T/B/X", "channel": "#sec"},
}


def submitted(fields: list[forms.Field]) -> dict[str, str]:
    """What a browser posts for these fields (unchecked boxes are absent)."""
    return {
        f"config.{f.name}": f.value for f in fields if f.widget != "checkbox" or f.value == "on"
    }


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_template_round_trips_through_its_form(name: str) -> None:
    template = default_registry().get(name)
    assert template is not None
    schema = template.config_schema()
    stored = template.parse_config(CONFIGS[name]).model_dump(mode="json")
    back = forms.parse(schema, submitted(forms.fields(schema, stored)))
    # A secret comes back as the mask, which the management API resolves to the stored value.
    masked = {k for k, v in back.items() if v == forms.MASK}
    assert masked == {k for k in template.secret_fields if stored.get(k)}
    back |= {k: stored[k] for k in masked}
    assert template.parse_config(back).model_dump(mode="json") == stored


def test_widgets_follow_the_schema() -> None:
    template = default_registry().get("webhook-emit")
    assert template is not None
    by_name = {f.name: f for f in forms.fields(template.config_schema(), {"secret": "whsec_x"})}
    assert by_name["secret"].widget == "password"
    assert by_name["secret"].value == forms.MASK  # never the secret itself
    assert by_name["mode"].widget == "select"
    assert by_name["mode"].options == ("background", "blocking")
    assert by_name["headers"].widget == "json"
    assert by_name["allow_http"].widget == "checkbox"
    assert by_name["timeout_ms"].widget == "integer"
    assert by_name["url"].required


def test_text_that_is_not_of_the_field_type_is_reported_by_field() -> None:
    template = default_registry().get("rate-limit-by-ip")
    assert template is not None
    with pytest.raises(forms.FormErrors) as info:
        forms.parse(template.config_schema(), {"config.limit": "ten", "config.ipv4_prefix": "24.5"})
    assert set(info.value.errors) == {"limit", "ipv4_prefix"}
    redirect = default_registry().get("redirect-by-group")
    assert redirect is not None
    with pytest.raises(forms.FormErrors) as bad_json:
        forms.parse(redirect.config_schema(), {"config.rules": "[{"})
    assert "not valid JSON" in bad_json.value.errors["rules"]


def test_empty_optional_inputs_take_their_defaults() -> None:
    template = default_registry().get("block-by-risk-score")
    assert template is not None
    config = forms.parse(
        template.config_schema(), {"config.threshold": "0.9", "config.message": ""}
    )
    assert config == {"threshold": 0.9}
