"""``domain-allowlist`` and ``domain-blocklist``: sign-ins by the domain of the user's email."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, StringConstraints, field_validator

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["DomainAllowlist", "DomainBlocklist", "DomainListConfig", "email_domain"]

Domain = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class DomainListConfig(TemplateConfig):
    """A list of email domains."""

    domains: list[Domain] = Field(min_length=1, description="email domains, e.g. acme.com")
    include_subdomains: bool = Field(default=False, description="eu.acme.com matches acme.com")
    block_without_email: bool = Field(
        default=True, description="block a user who has no email address"
    )
    message: str | None = Field(default=None, max_length=500, description="text for the login UI")

    @field_validator("domains")
    @classmethod
    def _normalise(cls, value: list[str]) -> list[str]:
        out = []
        for d in value:
            d = d.strip().lower().lstrip("@").rstrip(".")
            if not d or " " in d or "@" in d:
                raise ValueError(f"{d!r} is not a domain")
            out.append(d)
        return out


def email_domain(email: str | None) -> str | None:
    """The lower-cased domain of ``email`` (None when there is no usable one)."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].strip().lower().rstrip(".")
    return domain or None


def _matches(domain: str, config: DomainListConfig) -> bool:
    for d in config.domains:
        if domain == d or (config.include_subdomains and domain.endswith("." + d)):
            return True
    return False


class _DomainList(Template[DomainListConfig]):
    """Shared logic: ``listed_blocks`` says whether being on the list blocks or allows."""

    config_model = DomainListConfig
    listed_blocks: ClassVar[bool]
    reason: ClassVar[str]
    # a sign-in or a sign-up is what an address list decides; a token or a SAML response
    # is issued after the sign-in the list already let through
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION, Trigger.PRE_CREATION)

    async def run(
        self, inp: ActionInput, config: DomainListConfig, services: TemplateServices
    ) -> ActionOutput:
        domain = email_domain(inp.user.email)
        if domain is None:
            if config.block_without_email:
                return ActionOutput(kind="block", reason="email_required", message=config.message)
            return ActionOutput()
        if _matches(domain, config) == self.listed_blocks:
            return ActionOutput(kind="block", reason=self.reason, message=config.message)
        return ActionOutput()


class DomainAllowlist(_DomainList):
    """Block sign-ins whose email domain is not on the list."""

    name: ClassVar[str] = "domain-allowlist"
    description: ClassVar[str] = "Block sign-ins whose email domain is not on the list."
    listed_blocks: ClassVar[bool] = False
    reason: ClassVar[str] = "domain_not_allowed"


class DomainBlocklist(_DomainList):
    """Block sign-ins whose email domain is on the list."""

    name: ClassVar[str] = "domain-blocklist"
    description: ClassVar[str] = "Block sign-ins whose email domain is on the list."
    listed_blocks: ClassVar[bool] = True
    reason: ClassVar[str] = "domain_blocked"
