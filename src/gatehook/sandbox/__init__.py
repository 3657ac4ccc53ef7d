"""The JS/TS sandbox: supervised QuickJS child processes running tenant scripts.

Exports are loaded lazily: the child process imports ``gatehook.sandbox.child`` and must not
pay for the pool's imports (pydantic and friends make every pipe round trip slower: a larger
process switches more slowly; measured in benchmarks/sandbox.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatehook.sandbox.pool import Compiled, SandboxPool, ScriptJob, ScriptRun

__all__ = ["Compiled", "SandboxPool", "ScriptJob", "ScriptRun"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gatehook.sandbox import pool

        return getattr(pool, name)
    raise AttributeError(name)
