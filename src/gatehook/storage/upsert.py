"""An upsert that two writers may race on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pymongo.errors import DuplicateKeyError

__all__ = ["upserted"]

T = TypeVar("T")


async def upserted(op: Callable[[], Awaitable[T]]) -> T:
    """Run ``op``, an upsert of one ``_id``; when a concurrent upsert of the same ``_id``
    inserted the document first (E11000), run it once more: the document exists now, so it
    updates. MongoDB retries such an upsert itself; FerretDB does not (two workers starting
    together on a fresh database both write the layout marker)."""
    try:
        return await op()
    except DuplicateKeyError:
        return await op()
