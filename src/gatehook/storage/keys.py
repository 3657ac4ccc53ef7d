"""Where the stored domain lives: tenant buckets and document ids.

Every read on the decision path is a lookup of one ``_id`` in one tenant bucket. MongoDB
answers it from the ``_id`` index. FerretDB v1 (SQLite) answers it without reading documents
into Go (its one filter pushdown), but it uses no index for it: SQLite reads every row of
the collection (the index's expression, ``->"_id"``, is not the query's, ``->'$._id'``), so
the time of a lookup grows with the collection. Spreading each kind of document over
``BUCKETS`` collections by a hash of the tenant keeps that to a few dozen rows at 10,000
tenants, where one collection would be read whole. Ids are built from the natural key, whose
parts cannot hold a ``/`` (tenant slugs, action names, flow types, semantic versions).
"""

from __future__ import annotations

import zlib

from gatehook.domain.catalogue import FlowType

__all__ = [
    "BUCKETS",
    "KINDS",
    "action_id",
    "bucket_name",
    "bucket_of",
    "flow_id",
    "pin_id",
    "version_id",
]

BUCKETS = 256  # fixed: a stored document's bucket must never change
KINDS = ("tenants", "actions", "versions", "flows", "pins")


def bucket_of(tenant: str) -> int:
    """The bucket number of ``tenant``."""
    return zlib.crc32(tenant.encode()) % BUCKETS


def bucket_name(kind: str, bucket: int) -> str:
    """The collection name of one bucket of ``kind``."""
    return f"{kind}_{bucket:02x}"


def action_id(tenant: str, name: str) -> str:
    """An action's ``_id``."""
    return f"{tenant}/{name}"


def version_id(tenant: str, action: str, version: str) -> str:
    """An action version's ``_id``."""
    return f"{tenant}/{action}/{version}"


def flow_id(tenant: str, flow_type: FlowType | str, revision: int) -> str:
    """A flow revision's ``_id``."""
    ft = flow_type.value if isinstance(flow_type, FlowType) else flow_type
    return f"{tenant}/{ft}/{revision}"


def pin_id(tenant: str, signin_id: str) -> str:
    """A sign-in pin's ``_id``."""
    return f"{tenant}/{signin_id}"
