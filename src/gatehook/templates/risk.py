"""``block-by-risk-score`` and ``demand-mfa-by-risk-score``: act on ``request.risk_score``."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput
from gatehook.templates.base import Template, TemplateConfig, TemplateServices

__all__ = ["BlockByRiskScore", "DemandMfaByRiskScore", "RiskConfig"]


class RiskConfig(TemplateConfig):
    """A threshold on the login service's risk score."""

    threshold: float = Field(ge=0, le=1, description="act when the score is above this")
    when_missing: Literal["continue", "act"] = Field(
        default="continue", description="what to do when the request carries no risk score"
    )
    message: str | None = Field(default=None, max_length=500)


def _over(inp: ActionInput, config: RiskConfig) -> bool:
    score = inp.request.risk_score
    if score is None:
        return config.when_missing == "act"
    return score > config.threshold


class BlockByRiskScore(Template[RiskConfig]):
    """Block when the risk score exceeds the threshold."""

    name: ClassVar[str] = "block-by-risk-score"
    description: ClassVar[str] = "Block sign-ins whose risk score exceeds a threshold."
    config_model = RiskConfig
    # the risk of a sign-in or a sign-up, scored when it happens
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION, Trigger.PRE_CREATION)

    async def run(
        self, inp: ActionInput, config: RiskConfig, services: TemplateServices
    ) -> ActionOutput:
        if _over(inp, config):
            return ActionOutput(kind="block", reason="risk_too_high", message=config.message)
        return ActionOutput()


class DemandMfaByRiskScore(Template[RiskConfig]):
    """Demand MFA when the risk score exceeds the threshold."""

    name: ClassVar[str] = "demand-mfa-by-risk-score"
    description: ClassVar[str] = "Demand MFA when the risk score exceeds a threshold."
    config_model = RiskConfig
    # a second factor is asked for during a sign-in
    triggers: ClassVar[tuple[Trigger, ...]] = (Trigger.POST_AUTHENTICATION,)

    async def run(
        self, inp: ActionInput, config: RiskConfig, services: TemplateServices
    ) -> ActionOutput:
        if _over(inp, config):
            return ActionOutput(kind="demand_mfa", reason="risk_elevated", message=config.message)
        return ActionOutput()
