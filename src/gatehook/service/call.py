"""One trigger request in flight: what every attachment run of it needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import ActionInput, TriggerRequest
from gatehook.domain.decide import Step
from gatehook.domain.model import Attachment, Disabled

__all__ = ["Call"]


@dataclass(slots=True)
class Call:
    """One request in flight: what every attachment run needs."""

    tenant: str
    flow_type: FlowType
    trigger: Trigger
    req: TriggerRequest
    deadline: float
    input_prefix: bytes
    disabled: dict[str, Disabled] = field(default_factory=dict)
    shadows: list[tuple[Attachment, Step]] = field(default_factory=list)
    live_rollouts: set[str] | None = None  # running in the current flow (loaded on first use)
    _template_input: ActionInput | None = None

    @property
    def template_input(self) -> ActionInput:
        """The input as a model, for templates (built on first use: scripts need bytes only)."""
        if self._template_input is None:
            self._template_input = self.req.action_input(
                self.tenant, self.flow_type.value, self.trigger.value
            )
        return self._template_input
