"""A typed async client for login services: ``await client.trigger(...) -> TriggerReply``.

It sends one trigger request over NATS and returns the decision. On no responders or a
timeout it retries once with the same ``request_id``, which the workers deduplicate: one
decision, one decision record. Error replies become exceptions.

    nc = await connect("nats://acme-login:PASSWORD@nats:4222")
    client = GatehookClient(nc)
    reply = await client.trigger("acme", "external_authentication", "post_authentication",
                                 {"request_id": "...", "user": {"id": "u1", "email": "..."}})
    if reply.decision == "block": ...

``connect`` is ``nats.connect`` with the inbox prefix a role of deploy/nats-roles.conf may
read, ``_INBOX.<user>``, taken from the user it connects as: under those roles a reply to
any other inbox is refused by the server, and the request would only time out.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from gatehook.domain import subjects
from gatehook.domain.contract import TriggerReply, TriggerRequest
from gatehook.errors import BadRequest, GatehookError, TransportError

__all__ = ["GatehookClient", "connect", "inbox_prefix"]

_REFUSED = "permissions violation"


def inbox_prefix(servers: str | list[str], user: str | None = None) -> str | None:
    """The inbox prefix of the NATS user ``user`` (or the one the first server URL names):
    ``_INBOX.<user>``, where deploy/nats-roles.conf lets each role read its replies; ``None``
    when no user is named (nats-py's own ``_INBOX`` then)."""
    if user is None:
        first = servers if isinstance(servers, str) else (servers[0] if servers else "")
        user = unquote(urlsplit(first.split(",")[0].strip()).username or "") or None
    return f"_INBOX.{user}" if user else None


async def connect(servers: str | list[str] = "nats://127.0.0.1:4222", **options: Any) -> Client:
    """``nats.connect(servers, **options)``, with ``inbox_prefix`` set to the connecting
    user's (``inbox_prefix``) unless given."""
    if "inbox_prefix" not in options:
        prefix = inbox_prefix(servers, options.get("user"))
        if prefix is not None:
            options["inbox_prefix"] = prefix
    return await nats.connect(servers, **options)


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
        subject = subjects.trigger(tenant, flow_type, trigger)
        attempts = 2 if self._retry else 1
        last: Exception | None = None
        seen = self._nc.last_error  # a refusal the server reports while this request waits
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
        refused = self._nc.last_error
        if refused is not None and refused is not seen and _REFUSED in str(refused).lower():
            raise TransportError(
                f"NATS refused this connection: {refused} (a role may publish only its own"
                " tenants' trigger subjects and read only its own inbox, _INBOX.<user>:"
                " connect with gatehook.client.connect, which sets it)"
            )
        what = (
            "no gatehook worker answered"
            if isinstance(last, NoRespondersError)
            else (f"no decision within {self._timeout:.1f} s")
        )
        raise TransportError(f"{what} (tried {attempts} times)")
