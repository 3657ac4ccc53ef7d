"""The JS/TS sandbox: supervised QuickJS child processes running tenant scripts."""

from gatehook.sandbox.pool import Compiled, SandboxPool, ScriptJob, ScriptRun

__all__ = ["Compiled", "SandboxPool", "ScriptJob", "ScriptRun"]
