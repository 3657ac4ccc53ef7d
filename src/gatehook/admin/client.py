"""A small client of the management API over NATS (used by the CLI and the tests)."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from gatehook.domain import subjects
from gatehook.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatehookError,
    NotFound,
    TransportError,
    ValidationFailed,
)

__all__ = ["AdminClient"]

_BY_CODE: dict[str, type[GatehookError]] = {
    "invalid": ValidationFailed,
    "not_found": NotFound,
    "conflict": Conflict,
    "bad_request": BadRequest,
    "forbidden": Forbidden,
    "unavailable": TransportError,
}


class AdminClient:
    """``await client.call(tenant, "actions.list")`` -> the result, or a ``GatehookError``."""

    def __init__(
        self,
        nc: NATS,
        *,
        actor: str = "cli",
        timeout: float = 60.0,
        principal: str | None = None,
    ) -> None:
        """``principal``: this connection's NATS user, sent in the subject
        (``gatehook.v1.as.<principal>.admin...``: what deploy/nats.conf lets each role
        publish); None: the plain ``gatehook.v1.admin...`` subject."""
        self._nc = nc
        self._actor = actor
        self._timeout = timeout
        self._principal = principal

    def _subject(self, tenant: str, operation: str) -> str:
        if self._principal is None:
            return subjects.admin(tenant, operation)
        return subjects.as_admin(self._principal, tenant, operation)

    async def call(self, tenant: str, operation: str, /, **body: Any) -> Any:
        """Send one operation for ``tenant``; raise the matching error when it fails."""
        body.setdefault("actor", self._actor)
        try:
            msg = await self._nc.request(
                self._subject(tenant, operation), json.dumps(body).encode(), timeout=self._timeout
            )
        except NoRespondersError:
            raise TransportError("no gatehook worker is answering (is one running?)") from None
        except MaxPayloadError:
            raise BadRequest(
                f"the request is larger than the NATS server accepts ({self._nc.max_payload} bytes)"
            ) from None
        except NatsTimeout:
            raise TransportError(f"no answer within {self._timeout:.0f} s") from None
        reply = json.loads(msg.data)
        if reply.get("ok"):
            return reply.get("result")
        err = reply.get("error") or {}
        cls = _BY_CODE.get(str(err.get("code")), GatehookError)
        exc = cls(str(err.get("message", "unknown error")))
        if isinstance(exc, ValidationFailed):
            exc.field = err.get("field")
        raise exc
