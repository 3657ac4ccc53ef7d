"""``rate-limit-by-ip`` and ``rate-limit-by-user``: at most N requests per window.

Fixed windows (``floor(now / window) * window``), counted in MongoDB with one atomic
find-and-modify per request, shared by every worker. A request id is counted once: a retried
request gets the same answer and does not use up the budget. Counters expire with their
window: old windows are simply never read again (TTL indexes only reclaim the space).
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from typing import ClassVar, Literal

from pydantic import Field

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["RateLimitByIp", "RateLimitByUser", "RateLimitConfig", "client_key"]


class RateLimitConfig(TemplateConfig):
    """N requests per window."""

    limit: int = Field(ge=1, le=1_000_000, description="requests allowed per window")
    window_s: int = Field(default=60, ge=1, le=86_400, description="window length, seconds")
    ipv6_prefix: int = Field(default=64, ge=8, le=128, description="IPv6 clients grouped by")
    ipv4_prefix: int = Field(default=32, ge=8, le=32, description="IPv4 clients grouped by")
    by: Literal["id", "username"] = Field(default="id", description="rate-limit-by-user: key")
    when_missing: Literal["continue", "block"] = Field(
        default="continue", description="what to do when the request has no IP / user"
    )
    message: str | None = Field(default=None, max_length=500)


def client_key(ip: str, v4_prefix: int = 32, v6_prefix: int = 64) -> str | None:
    """The network a client address counts under (IPv6 grouped by prefix); None if not an IP."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


async def _limit(
    inp: ActionInput, config: RateLimitConfig, services: TemplateServices, subject: str | None
) -> ActionOutput:
    if subject is None:
        if config.when_missing == "block":
            return ActionOutput(
                kind="block", reason="rate_limit_key_missing", message=config.message
            )
        return ActionOutput()
    window_start = int(time.time()) // config.window_s * config.window_s
    digest = hashlib.sha256(subject.encode()).hexdigest()[:24]
    key = f"{inp.tenant}/{inp.action}/{digest}"
    allowed, _ = await services.counters.hit(
        key, window_start, config.window_s, config.limit, inp.request_id
    )
    if allowed:
        return ActionOutput()
    return ActionOutput(kind="block", reason="rate_limited", message=config.message)


class RateLimitByIp(Template[RateLimitConfig]):
    """Refuse requests above the limit per client network."""

    name: ClassVar[str] = "rate-limit-by-ip"
    description: ClassVar[str] = "Block requests above N per window per client IP (IPv6 by /64)."
    config_model = RateLimitConfig
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION, Trigger.PRE_CREATION)

    async def run(
        self, inp: ActionInput, config: RateLimitConfig, services: TemplateServices
    ) -> ActionOutput:
        ip = inp.request.ip
        subject = client_key(ip, config.ipv4_prefix, config.ipv6_prefix) if ip else None
        return await _limit(inp, config, services, f"ip:{subject}" if subject else None)


class RateLimitByUser(Template[RateLimitConfig]):
    """Refuse requests above the limit per account."""

    name: ClassVar[str] = "rate-limit-by-user"
    description: ClassVar[str] = "Block requests above N per window per user id (or username)."
    config_model = RateLimitConfig
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION, Trigger.PRE_CREATION)

    async def run(
        self, inp: ActionInput, config: RateLimitConfig, services: TemplateServices
    ) -> ActionOutput:
        value = inp.user.id if config.by == "id" else inp.user.username
        return await _limit(inp, config, services, f"user:{value}" if value else None)
