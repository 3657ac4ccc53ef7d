"""``redirect-by-group``: send members of given groups to given URLs after sign-in."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput, is_absolute_http_url
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["RedirectByGroup", "RedirectConfig", "RedirectRule"]


class RedirectRule(TemplateConfig):
    """Members of ``group`` go to ``url``."""

    group: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2048)


class RedirectConfig(TemplateConfig):
    """Rules in order; the first whose group the user is in wins."""

    rules: list[RedirectRule] = Field(min_length=1, max_length=100)
    allow_http: bool = Field(default=False, description="allow plain http:// URLs")

    @model_validator(mode="after")
    def _urls(self) -> RedirectConfig:
        for i, rule in enumerate(self.rules):
            if not is_absolute_http_url(rule.url, https_only=not self.allow_http):
                need = "http(s)" if self.allow_http else "https"
                raise ValueError(f"rules[{i}].url must be an absolute {need} URL")
        return self


class RedirectByGroup(Template[RedirectConfig]):
    """Redirect the first matching group's members."""

    name: ClassVar[str] = "redirect-by-group"
    description: ClassVar[str] = "Redirect members of given groups to given URLs after sign-in."
    config_model = RedirectConfig
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION, Trigger.POST_CREATION)

    async def run(
        self, inp: ActionInput, config: RedirectConfig, services: TemplateServices
    ) -> ActionOutput:
        groups = set(inp.user.groups)
        for rule in config.rules:
            if rule.group in groups:
                return ActionOutput(kind="redirect", reason="group_redirect", redirect_url=rule.url)
        return ActionOutput()
