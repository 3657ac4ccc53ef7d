"""A typed async client for login services: ``await client.trigger(...) -> TriggerReply``.

It sends one trigger request over NATS and returns the decision. On no responders or a
timeout it retries once with the same ``request_id``, which the workers deduplicate: one
decision, one set of audit events. Error replies become exceptions.

    nc = await nats.connect("nats://...")
    client = GatehookClient(nc)
    reply = await client.trigger("acme", "external_authentication", "post_authentication",
                                 {"request_id": "...", "user": {"id": "u1", "email": "..."}})
    if reply.decision == "block": ...
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from gatehook.domain.contract import TriggerReply, TriggerRequest
from gatehook.errors import BadRequest, GatehookError, TransportError

__all__ = ["GatehookClient"]


class GatehookClient:
    """Trigger requests as a login service sends them."""

    def __init__(self, nc: Client, *, timeout: float = 2.0, retry: bool = True) -> None:
        self._nc = nc
        self._timeout = timeout
        self._retry = retry

    async def trigger(
        self,
        tenant: str,
        flow_type: str,
        trigger: str,
        request: TriggerRequest | dict[str, Any],
    ) -> TriggerReply:
        """Ask for a decision; raise ``BadRequest`` or ``TransportError`` when there is none.

        A dict without ``request_id`` gets a fresh one (kept across the retry).
        """
        if isinstance(request, TriggerRequest):
            body = request.model_dump(mode="json", exclude_none=True)
        else:
            body = dict(request)
            body.setdefault("request_id", uuid.uuid4().hex)
        payload = json.dumps(body).encode()
        subject = f"gatehook.v1.trigger.{tenant}.{flow_type}.{trigger}"
        attempts = 2 if self._retry else 1
        last: Exception | None = None
        for _ in range(attempts):
            try:
                msg = await self._nc.request(subject, payload, timeout=self._timeout)
            except (NoRespondersError, NatsTimeout) as exc:
                last = exc
                continue
            reply = TriggerReply.model_validate_json(msg.data)
            if reply.error is None:
                return reply
            if reply.error.code == "bad_request":
                raise BadRequest(reply.error.message)
            if reply.error.code == "unavailable":
                raise TransportError(reply.error.message)
            raise GatehookError(reply.error.message)
        what = (
            "no gatehook worker answered"
            if isinstance(last, NoRespondersError)
            else (f"no decision within {self._timeout:.1f} s")
        )
        raise TransportError(f"{what} (tried {attempts} times)")
