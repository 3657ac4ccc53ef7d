"""``webhook-emit`` and ``slack-notify``: tell another system that a slot fired.

The sign-in never waits for the receiver in the default (background) mode: the delivery is
queued and sent with retries by the app's delivery service. Blocking mode waits up to its
timeout and still never fails the sign-in (the action continues either way; the outcome is
counted and logged). Deliveries are signed the Standard Webhooks way when a secret is set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gatehook.domain.contract import ActionInput, ActionOutput, is_absolute_http_url
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["SlackConfig", "SlackNotify", "WebhookConfig", "WebhookEmit", "summary"]


def _url(value: str, https_only: bool) -> str:
    if not is_absolute_http_url(value, https_only=https_only):
        raise ValueError("must be an absolute " + ("https" if https_only else "http(s)") + " URL")
    return value


class WebhookConfig(TemplateConfig):
    """Where to POST the summary, and how."""

    url: str = Field(max_length=2048, description="receiver; https unless allow_http")
    secret: str | None = Field(
        default=None, max_length=512, description="Standard Webhooks secret (whsec_... or text)"
    )
    mode: Literal["background", "blocking"] = "background"
    timeout_ms: int = Field(default=2000, ge=10, le=10_000, description="blocking mode")
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    allow_http: bool = False

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value, https_only=False)

    @model_validator(mode="after")
    def _https(self) -> WebhookConfig:
        if not self.allow_http and not is_absolute_http_url(self.url, https_only=True):
            raise ValueError("url must be https (or set allow_http)")
        return self


class SlackConfig(TemplateConfig):
    """A Slack incoming webhook."""

    webhook_url: str = Field(max_length=2048, description="https://hooks.slack.com/services/...")
    channel: str | None = Field(default=None, max_length=100)
    username: str | None = Field(default=None, max_length=100)
    icon_emoji: str | None = Field(default=None, max_length=100)
    mode: Literal["background", "blocking"] = "background"
    timeout_ms: int = Field(default=2000, ge=10, le=10_000)

    @field_validator("webhook_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value, https_only=True)


def summary(inp: ActionInput) -> dict[str, object]:
    """The JSON summary of a trigger that webhooks carry."""
    return {
        "type": "gatehook.trigger",
        "tenant": inp.tenant,
        "flow_type": inp.flow_type,
        "trigger": inp.trigger,
        "action": inp.action,
        "user_id": inp.user.id,
        "decision_so_far": inp.decision_so_far or "continue",
        "request_id": inp.request_id,
        "signin_id": inp.signin_id,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def _bounded(timeout_ms: int, inp: ActionInput) -> int:
    """A blocking send never outlives the action's own time limit (it must not fail it)."""
    if inp.time_left_ms is None:
        return timeout_ms
    return max(1, min(timeout_ms, int(inp.time_left_ms)))


def _message_id(inp: ActionInput) -> str:
    return f"msg_{inp.tenant}_{inp.action}_{inp.request_id}"[:200]


async def _deliver(
    services: TemplateServices,
    inp: ActionInput,
    url: str,
    body: bytes,
    mode: str,
    timeout_ms: int,
    *,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Hand one delivery to the app's delivery service; its id is stable across retries."""
    await services.delivery.send(
        url,
        body,
        message_id=_message_id(inp),
        secret=secret,
        headers=headers or {},
        blocking=mode == "blocking",
        timeout_ms=_bounded(timeout_ms, inp),
    )


class WebhookEmit(Template[WebhookConfig]):
    """POST a summary of the trigger to a URL."""

    name: ClassVar[str] = "webhook-emit"
    description: ClassVar[str] = "POST a signed JSON summary of the trigger to a URL."
    config_model = WebhookConfig
    secret_fields: ClassVar[tuple[str, ...]] = ("secret",)

    async def run(
        self, inp: ActionInput, config: WebhookConfig, services: TemplateServices
    ) -> ActionOutput:
        body = json.dumps(summary(inp), separators=(",", ":")).encode()
        await _deliver(
            services,
            inp,
            config.url,
            body,
            config.mode,
            config.timeout_ms,
            secret=config.secret,
            headers=dict(config.headers),
        )
        return ActionOutput()


class SlackNotify(Template[SlackConfig]):
    """Post the sign-in summary to a Slack channel."""

    name: ClassVar[str] = "slack-notify"
    description: ClassVar[str] = "Post a sign-in summary to a Slack incoming webhook."
    config_model = SlackConfig
    secret_fields: ClassVar[tuple[str, ...]] = ("webhook_url",)

    async def run(
        self, inp: ActionInput, config: SlackConfig, services: TemplateServices
    ) -> ActionOutput:
        s = summary(inp)
        text = (
            f":key: *{s['tenant']}* {s['flow_type']}.{s['trigger']}: user `{s['user_id']}` "
            f"(decision so far: {s['decision_so_far']}, request {s['request_id']})"
        )
        payload: dict[str, object] = {"text": text}
        for field in ("channel", "username", "icon_emoji"):
            value = getattr(config, field)
            if value:
                payload[field] = value
        await _deliver(
            services,
            inp,
            config.webhook_url,
            json.dumps(payload).encode(),
            config.mode,
            config.timeout_ms,
        )
        return ActionOutput()
