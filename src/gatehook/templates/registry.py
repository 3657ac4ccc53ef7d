"""The registry of platform templates, by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gatehook.templates.base import Template
from gatehook.templates.decorate_token import DecorateToken
from gatehook.templates.email_domain import DomainAllowlist, DomainBlocklist
from gatehook.templates.rate_limit import RateLimitByIp, RateLimitByUser
from gatehook.templates.redirect_group import RedirectByGroup
from gatehook.templates.risk import BlockByRiskScore, DemandMfaByRiskScore
from gatehook.templates.webhook import SlackNotify, WebhookEmit

__all__ = ["SECRET_MASK", "TemplateRegistry", "default_registry"]


#: What a secret config value is shown as; publishing it back keeps the stored secret.
SECRET_MASK = "********"


class TemplateRegistry:
    """Templates by name."""

    def __init__(self, templates: list[Template[Any]]) -> None:
        self._by_name = {t.name: t for t in templates}

    def get(self, name: str) -> Template[Any] | None:
        """The template called ``name``, or None."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Template[Any]]:
        return iter(self._by_name.values())

    def mask_secrets(self, template: str | None, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the template's secret fields replaced, for showing and logging."""
        t = self._by_name.get(template or "")
        if t is None or not t.secret_fields:
            return config
        return {k: (SECRET_MASK if k in t.secret_fields and v else v) for k, v in config.items()}

    def secret_fields(self) -> dict[str, tuple[str, ...]]:
        """The secret config fields of every template that has some, by template name."""
        return {name: t.secret_fields for name, t in self._by_name.items() if t.secret_fields}

    def names(self) -> list[str]:
        """Every template name, sorted."""
        return sorted(self._by_name)


def default_registry() -> TemplateRegistry:
    """The templates shipped with gatehook."""
    items: list[Template[Any]] = [
        DomainAllowlist(),
        DomainBlocklist(),
        BlockByRiskScore(),
        DemandMfaByRiskScore(),
        RedirectByGroup(),
        DecorateToken(),
        RateLimitByIp(),
        RateLimitByUser(),
        WebhookEmit(),
        SlackNotify(),
    ]
    return TemplateRegistry(items)
