"""The port the management use cases depend on: the store of actions, versions and flows.

Its one adapter is ``storage.MongoStore``, whose methods of the same names document each
one. The admin package names what it needs here and never the adapter, so that what the
management API can write is what this list says.
"""

from __future__ import annotations

from typing import Any, Protocol

from gatehook.domain.catalogue import FlowType
from gatehook.domain.model import (
    ActionDef,
    ActionVersion,
    Disabled,
    FlowRevision,
    TenantHeads,
)

__all__ = ["AdminStore"]


class AdminStore(Protocol):
    """What ``AdminService`` and ``RolloutAdmin`` read and write."""

    async def get_version(self, tenant: str, action: str, version: str) -> ActionVersion | None: ...

    async def tenant_heads(self, tenant: str) -> TenantHeads: ...

    async def get_flow(
        self, tenant: str, flow_type: FlowType, revision: int
    ) -> FlowRevision | None: ...

    async def insert_flow(self, flow: FlowRevision) -> None: ...

    async def advance_flow(
        self, tenant: str, flow_type: FlowType, revision: int, flow: FlowRevision | None = None
    ) -> None: ...

    async def delete_flow(self, tenant: str, flow_type: FlowType, revision: int) -> None: ...

    async def latest_flow(self, tenant: str, flow_type: FlowType) -> FlowRevision | None: ...

    async def flow_history(
        self, tenant: str, flow_type: FlowType, limit: int = 50
    ) -> list[FlowRevision]: ...

    async def insert_action(self, action: ActionDef) -> None: ...

    async def delete_action(self, tenant: str, name: str) -> None: ...

    async def get_action(self, tenant: str, name: str) -> ActionDef | None: ...

    async def list_actions(self, tenant: str) -> list[ActionDef]: ...

    async def set_action_metadata(self, tenant: str, name: str, fields: dict[str, Any]) -> None: ...

    async def set_disabled(self, tenant: str, name: str, disabled: Disabled | None) -> None: ...

    async def set_recording(self, tenant: str, slot: str, redact: list[str] | None) -> None: ...

    async def rollout_totals(
        self, tenant: str, rollout_ids: list[str]
    ) -> dict[str, dict[str, Any]]: ...

    async def set_latest_version(self, tenant: str, name: str, version: str) -> None: ...

    async def insert_version(self, version: ActionVersion) -> None: ...

    async def delete_version(self, tenant: str, action: str, version: str) -> None: ...

    async def list_versions(self, tenant: str, action: str) -> list[ActionVersion]: ...

    async def get_ingress(self, tenant: str) -> dict[str, dict[str, Any]]: ...

    async def set_ingress(self, tenant: str, providers: dict[str, dict[str, Any]]) -> None: ...
