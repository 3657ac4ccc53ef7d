"""The one way a management change is made: written, audited, or undone.

A change is written first, then its audit events are published and acknowledged by the
stream; when the stream refuses them (or the caller goes away meanwhile), the write is
undone and the error raised, so no change stays without its audit event. Checks belong
before ``change``: nothing it is given may still be refused after the write, other than by
the store itself. Every admin use case that changes state goes through here (the test
``tests/e2e/test_audited_changes.py`` lists them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from gatehook.domain.contract import AuditEvent
from gatehook.service.ports import AuditSink

__all__ = ["AuditedWrites", "Notify"]

log = logging.getLogger("gatehook.admin")

T = TypeVar("T")
Notify = Callable[[str], Awaitable[None]]


class AuditedWrites:
    """Writes with their audit events (see the module)."""

    def __init__(self, audit: AuditSink, notify: Notify) -> None:
        self._audit = audit
        self._notify = notify

    async def change(
        self,
        events: Sequence[AuditEvent],
        write: Callable[[], Awaitable[T]],
        undo: Callable[[], Awaitable[object]],
    ) -> T:
        """``write``, then publish ``events``; on any failure to publish, ``undo`` and
        re-raise. ``events`` must not be empty: a change without an event is the bug this
        path exists to prevent."""
        if not events:
            raise ValueError("a management change needs its audit event")
        result = await write()
        try:
            await self._audit.publish(list(events))
        except BaseException:
            try:
                # shielded: a caller cancelled while the audit was pending still gets its
                # write undone
                await asyncio.shield(undo())
            except Exception:
                log.critical(
                    "a change of %s was written, its audit event refused, and undoing it"
                    " failed: the store holds a change without its audit event (%s)",
                    events[0].tenant,
                    ", ".join(e.type for e in events),
                    exc_info=True,
                )
            raise
        return result

    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Publish events that go with no write of gatehook's (a console sign-in, a gateway
        refusal, an admin request refused)."""
        await self._audit.publish(list(events))

    async def changed(self, tenant: str) -> None:
        """Broadcast that ``tenant``'s flows or actions changed (after ``change``)."""
        await self._notify(tenant)
