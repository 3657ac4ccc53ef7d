"""``decorate-token``: add claims, constants or values read by a safe dotted path."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["RESERVED_CLAIMS", "ClaimSource", "DecorateToken", "DecorateTokenConfig", "resolve_path"]

RESERVED_CLAIMS = frozenset(
    {
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "azp",
        "nonce",
        "auth_time",
        "acr",
        "amr",
        "at_hash",
        "c_hash",
        "sid",
    }
)
_PATH = re.compile(r"(user|request|context|state)(\.[A-Za-z0-9_:-]{1,64}){0,8}")


class ClaimSource(TemplateConfig):
    """A constant ``value`` or a ``path`` such as ``user.email`` or ``context.org.id``."""

    value: Any = None
    path: str | None = Field(default=None, max_length=600)
    default: Any = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.fullmatch(value):
            raise ValueError(
                "path must be dotted names under user, request, context or state (e.g. user.email)"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> ClaimSource:
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of value or path")
        return self


class DecorateTokenConfig(TemplateConfig):
    """Claims to add, by claim name."""

    claims: dict[str, ClaimSource] = Field(min_length=1, max_length=100)

    @field_validator("claims")
    @classmethod
    def _not_reserved(cls, value: dict[str, ClaimSource]) -> dict[str, ClaimSource]:
        for name in value:
            if name in RESERVED_CLAIMS:
                raise ValueError(f"claim {name!r} is reserved and cannot be set")
            if not 0 < len(name) <= 200:
                raise ValueError("claim names are 1 to 200 characters")
        return value


def resolve_path(data: dict[str, Any], path: str) -> Any:
    """Walk ``path`` through nested dicts; None where a step is missing. Never runs code."""
    current: Any = data
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


class DecorateToken(Template[DecorateTokenConfig]):
    """Add the configured claims."""

    name: ClassVar[str] = "decorate-token"
    description: ClassVar[str] = (
        "Add custom claims: constants or values taken from the user/request."
    )
    config_model = DecorateTokenConfig
    triggers: ClassVar[tuple[Trigger, ...]] = (
        Trigger.PRE_USERINFO_CREATION,
        Trigger.PRE_ACCESS_TOKEN_CREATION,
    )

    async def run(
        self, inp: ActionInput, config: DecorateTokenConfig, services: TemplateServices
    ) -> ActionOutput:
        data = inp.model_dump(include={"user", "request", "context", "state"})
        claims: dict[str, Any] = {}
        for name, src in config.claims.items():
            value = src.value if src.path is None else resolve_path(data, src.path)
            if value is None:
                value = src.default
            if value is not None:
                claims[name] = value
        return ActionOutput(claims=claims)
