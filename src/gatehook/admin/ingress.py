"""The gateway's requests to the workers: ``gatehook.v1.ingress.<tenant>.<operation>``.

``gatehook http`` holds no state: it asks a worker for a tenant's provider secrets (to check
a provider's signature or key) and has the worker write its audit events. Only the
gateway's NATS user may publish here (deploy/nats.conf): the answer carries secrets.

- ``keys`` ``{"provider": "zitadel"}`` -> ``{"configured": bool, "secrets": [...],
  "header": ...}``;
- ``audit`` ``{"type": "ingress.refused" | "ingress.event_received", "provider", "reason",
  "details"}`` -> ``{"event_id"}``.

Replies are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"code",
"message"}}``, as the management API's.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatehook.admin.service import AdminService
from gatehook.domain import subjects
from gatehook.domain.catalogue import TENANT_RE
from gatehook.domain.ingress import Provider
from gatehook.errors import GatehookError

__all__ = ["IngressApi"]

log = logging.getLogger("gatehook.ingress")


class KeysReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Provider


class AuditReq(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["ingress.refused", "ingress.event_received"]
    provider: Provider
    reason: str | None = Field(default=None, max_length=500)
    details: dict[str, Any] = Field(default_factory=dict)


class IngressApi:
    """Answers the gateway (see the module)."""

    def __init__(self, service: AdminService) -> None:
        self._service = service

    async def handle(self, subject: str, payload: bytes) -> bytes:
        """Answer one request; never raises."""
        parts = subjects.ingress_parts(subject)
        try:
            if parts is None or not TENANT_RE.fullmatch(parts[0]):
                raise ValueError(f"subject must be {subjects.said(subjects.INGRESS_FORM)}")
            tenant, op = parts
            if op == "keys":
                keys = KeysReq.model_validate_json(payload or b"{}")
                entry = (await self._service.ingress(tenant)).get(keys.provider)
                result: dict[str, Any] = (
                    {"configured": True, **entry} if entry else {"configured": False}
                )
            elif op == "audit":
                req = AuditReq.model_validate_json(payload or b"{}")
                text = json.dumps(req.details, default=str)
                details = json.loads(text) if len(text) <= 4000 else {"truncated": True}
                event = self._service.event(
                    req.type,
                    tenant,
                    f"gateway:{req.provider}",
                    error=req.reason,
                    details={"provider": req.provider, **details},
                )
                await self._service.publish_events([event])
                result = {"event_id": event.event_id}
            else:
                raise ValueError(f"unknown operation {op!r}; one of keys, audit")
            return json.dumps({"ok": True, "result": result}).encode()
        except (ValueError, ValidationError) as exc:
            error = {"code": "bad_request", "message": str(exc)[:500], "retryable": False}
        except GatehookError as exc:
            error = {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
        except Exception:
            log.exception("ingress request failed: %s", subject[:200])
            error = {"code": "internal", "message": "internal error", "retryable": True}
        return json.dumps({"ok": False, "error": error}).encode()
