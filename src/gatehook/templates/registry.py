"""The registry of platform templates, by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gatehook.templates.base import Template
from gatehook.templates.decorate_token import DecorateToken
from gatehook.templates.email_domain import DomainAllowlist, DomainBlocklist
from gatehook.templates.redirect_group import RedirectByGroup
from gatehook.templates.risk import BlockByRiskScore, DemandMfaByRiskScore

__all__ = ["TemplateRegistry", "default_registry"]


class TemplateRegistry:
    """Templates by name."""

    def __init__(self, templates: list[Template[Any]]) -> None:
        self._by_name = {t.name: t for t in templates}

    def get(self, name: str) -> Template[Any] | None:
        """The template called ``name``, or None."""
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Template[Any]]:
        return iter(self._by_name.values())

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
    ]
    return TemplateRegistry(items)
