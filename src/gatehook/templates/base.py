"""What a platform template is: a config model (its JSON Schema is the form), compatible
triggers, and ``run``. Templates are native Python, called in-process by the worker."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from gatehook.domain.catalogue import Trigger
from gatehook.domain.contract import ActionInput, ActionOutput
from gatehook.domain.problems import field_of, problems, summary
from gatehook.errors import ValidationFailed

__all__ = [
    "ALL_TRIGGERS",
    "CounterStore",
    "Delivery",
    "Template",
    "TemplateConfig",
    "TemplateServices",
]

ALL_TRIGGERS: tuple[Trigger, ...] = tuple(Trigger)

C = TypeVar("C", bound="TemplateConfig")


class TemplateConfig(BaseModel):
    """Base of template configs: unknown fields are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CounterStore(Protocol):
    """Shared counters of rate limits (MongoDB in production)."""

    async def hit(
        self, key: str, window_start: int, window_s: int, limit: int, request_id: str
    ) -> tuple[bool, int]:
        """Count ``request_id`` in the window (once, however often it is retried).

        Returns (allowed, requests counted in the window).
        """
        ...


class Delivery(Protocol):
    """Outbound webhook delivery (background queue or a blocking send)."""

    async def send(
        self,
        url: str,
        body: bytes,
        *,
        message_id: str,
        secret: str | None,
        headers: dict[str, str],
        blocking: bool,
        timeout_ms: int,
    ) -> bool:
        """Deliver ``body``; in background mode only enqueue (False when the queue is full)."""
        ...


class TemplateServices(Protocol):
    """Ports a template may use; filled in by the app."""

    counters: CounterStore
    delivery: Delivery


class Template(ABC, Generic[C]):
    """A platform-shipped action. Subclasses set the class variables and implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    config_model: ClassVar[type[TemplateConfig]]
    triggers: ClassVar[tuple[Trigger, ...]] = ALL_TRIGGERS
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def parse_config(self, raw: dict[str, Any]) -> C:
        """Validate ``raw``; ``ValidationFailed`` names the field and what is wrong."""
        try:
            return self.config_model.model_validate(raw)  # type: ignore[return-value]
        except ValidationError as exc:
            lines = problems(exc, self.config_model, raw)
            raise ValidationFailed(
                f"config of template {self.name}: {summary(lines)}",
                field=field_of(exc, "config"),
            ) from None

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of the config form; secret fields carry ``"writeOnly": true``."""
        schema = self.config_model.model_json_schema()
        for name in self.secret_fields:
            prop = schema.get("properties", {}).get(name)
            if isinstance(prop, dict):
                prop["writeOnly"] = True
                prop["format"] = "password"
        return schema

    @abstractmethod
    async def run(self, inp: ActionInput, config: C, services: TemplateServices) -> ActionOutput:
        """Decide for one trigger."""


class DryRun:
    """``TemplateServices`` that change nothing: nothing is sent, no rate limit counts (every
    request is allowed). For shadow runs and replays, where a template must not act."""

    class _Counters:
        async def hit(
            self, key: str, window_start: int, window_s: int, limit: int, request_id: str
        ) -> tuple[bool, int]:
            return True, 0

    class _Delivery:
        async def send(
            self,
            url: str,
            body: bytes,
            *,
            message_id: str,
            secret: str | None,
            headers: dict[str, str],
            blocking: bool,
            timeout_ms: int,
        ) -> bool:
            return True

    def __init__(self) -> None:
        self.counters: CounterStore = DryRun._Counters()
        self.delivery: Delivery = DryRun._Delivery()
