"""One trigger request in flight: what every attachment run of it needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from gatehook.domain.catalogue import FlowType, Trigger
from gatehook.domain.contract import ActionInput, RequestInfo, TriggerRequest, User
from gatehook.domain.decide import Step
from gatehook.domain.model import Attachment, Disabled
from gatehook.service.encoding import dumps
from gatehook.service.ports import ScriptRun

__all__ = ["Call", "EarlyRun"]


@dataclass(slots=True)
class EarlyRun:
    """A pure script started together with its slot's others (``EarlyRun.start``): the run,
    and when it began and ended (``perf_counter``), so its audit ``duration_ms`` is its own."""

    run: asyncio.Future[ScriptRun] = field(init=False)
    began: float = field(default_factory=time.perf_counter)
    ended: float = 0.0

    @classmethod
    def start(cls, run: Coroutine[Any, Any, ScriptRun]) -> EarlyRun:
        """Run ``run`` as a task of its own, from now."""
        early = cls()
        early.run = asyncio.ensure_future(early._timed(run))
        early.run.add_done_callback(_retrieve)
        return early

    async def _timed(self, run: Coroutine[Any, Any, ScriptRun]) -> ScriptRun:
        try:
            return await run
        finally:
            self.ended = time.perf_counter()

    @property
    def duration_ms(self) -> float:
        """The run's own time (until now, while it runs)."""
        return ((self.ended or time.perf_counter()) - self.began) * 1000


def _retrieve(run: asyncio.Future[ScriptRun]) -> None:
    """An early run's error is the slot's to report; one the slot never reached is dropped
    here (not logged as never retrieved)."""
    if not run.cancelled():
        run.exception()


@dataclass(slots=True)
class Call:
    """One request in flight: what every attachment run needs."""

    tenant: str
    flow_type: FlowType
    trigger: Trigger
    req: TriggerRequest
    deadline: float
    _prefix: bytes | None = None
    disabled: dict[str, Disabled] = field(default_factory=dict)
    shadows: list[tuple[Attachment, Step]] = field(default_factory=list)
    live_rollouts: set[str] | None = None  # running in the current flow (loaded on first use)
    _template_fields: dict[str, Any] | None = None
    _context: dict[str, Any] | None = None
    # pure scripts of the slot started together, by (action, version): see TriggerService
    early: dict[tuple[str, str], EarlyRun] | None = None

    @property
    def context(self) -> dict[str, Any]:
        """The request's context as actions see it (``action_context``), built once."""
        if self._context is None:
            self._context = self.req.action_context()
        return self._context

    @property
    def input_prefix(self) -> bytes:
        """The script input's JSON up to its config, built on first use (a slot of templates
        alone never needs it) from the validated request: pydantic's own serialiser for its
        parts, no model built again."""
        if self._prefix is None:
            req = self.req
            self._prefix = b"".join(
                (
                    b'{"tenant":',
                    dumps(self.tenant),
                    b',"flow_type":"',
                    self.flow_type.encode(),
                    b'","trigger":"',
                    self.trigger.encode(),
                    b'","request_id":',
                    dumps(req.request_id),
                    b',"signin_id":',
                    dumps(req.signin_id),
                    b',"user":',
                    User.__pydantic_serializer__.to_json(req.user),
                    b',"request":',
                    RequestInfo.__pydantic_serializer__.to_json(req.request),
                    b',"state":',
                    dumps(req.state),
                    b',"context":',
                    dumps(self.context),
                    b',"config":',
                )
            )
        return self._prefix

    def template_input(self, action: str, decision_so_far: str, time_left_ms: float) -> ActionInput:
        """The input as a model, for one template run. Built from the validated request's
        parts without validating them again (``model_construct``); the request-wide fields
        are gathered on first use (scripts need bytes only)."""
        if self._template_fields is None:
            req = self.req
            self._template_fields = {
                "tenant": self.tenant,
                "flow_type": str(self.flow_type),
                "trigger": str(self.trigger),
                "request_id": req.request_id,
                "signin_id": req.signin_id,
                "user": req.user,
                "request": req.request,
                "state": req.state,
                "context": self.context,
                "config": {},
            }
        # every field given: a default_factory left to model_construct costs an
        # inspect.signature per field per run (pydantic 2), more than the template itself
        return ActionInput.model_construct(
            **self._template_fields,
            action=action,
            decision_so_far=decision_so_far,
            time_left_ms=time_left_ms,
            secrets={},
            cache={},
        )
