"""The error tree of gatehook: one root, a few families, ``retryable`` as data.

Driver exceptions (pymongo, nats) are translated into these at the adapter boundary,
so the layers above only ever see a ``GatehookError``.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "CompileError",
    "ConfigError",
    "Conflict",
    "GatehookError",
    "InvalidResult",
    "NotFound",
    "SandboxCrashed",
    "ScriptError",
    "ScriptMemoryError",
    "ScriptThrew",
    "ScriptTimeout",
    "StorageError",
    "StorageUnavailable",
    "TargetFailed",
    "TransportError",
    "ValidationFailed",
]


class GatehookError(Exception):
    """Root of every error gatehook raises on purpose."""

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(GatehookError):
    """Settings or a tenant's configuration cannot be used."""


class BadRequest(GatehookError):
    """The caller sent something that can never succeed as sent."""

    code = "bad_request"


class ValidationFailed(BadRequest):
    """A management request failed validation (name, version, config, trigger...)."""

    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Forbidden(BadRequest):
    """The caller's role may not do this (whoever it says it acts for)."""

    code = "forbidden"


class NotFound(BadRequest):
    """The thing asked for does not exist in this tenant (or is not visible to it)."""

    code = "not_found"


class Conflict(BadRequest):
    """A concurrent change won; read again and retry."""

    code = "conflict"
    retryable = True


class StorageError(GatehookError):
    """MongoDB failed in a way that is not the caller's fault."""


class StorageUnavailable(StorageError):
    """MongoDB cannot be reached right now."""

    code = "unavailable"
    retryable = True


class TransportError(GatehookError):
    """NATS or JetStream failed (audit stream unavailable, no responders...)."""

    code = "unavailable"
    retryable = True


class ScriptError(GatehookError):
    """An action failed while it ran; ``kind`` names how, for traces and metrics."""

    kind: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.logs: list[str] = []  # what the script logged before it failed
        self.ran_ms: float | None = None  # how long it ran before it failed (None: it never ran)


class CompileError(ScriptError):
    """A script does not compile; line and column are 1-based where known."""

    kind = "compile"
    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        modules: tuple[tuple[str, int, int], ...] = (),
    ) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(f"{message}{where}")
        self.line = line
        self.column = column
        self.modules = modules  # what the script names in its syntax: (name, line, column)


class ScriptTimeout(ScriptError):
    """The action ran past its time limit and was stopped."""

    kind = "timeout"

    def __init__(self, timeout_ms: float) -> None:
        super().__init__(f"timed out after {timeout_ms:.0f} ms")
        self.timeout_ms = timeout_ms


class ScriptMemoryError(ScriptError):
    """The action exceeded its memory limit."""

    kind = "memory"


class ScriptThrew(ScriptError):
    """The action threw (or rejected) with this message."""

    kind = "threw"


class InvalidResult(ScriptError):
    """The action returned something that is not a valid decision (or too large)."""

    kind = "invalid_result"


class SandboxCrashed(ScriptError):
    """The child process running the action died or hung; it has been replaced."""

    kind = "crashed"
    retryable = True


class TargetFailed(ScriptError):
    """A target endpoint did not answer well: a refused address, a non-2xx status, a
    timeout, an unreadable or oversized body, an open circuit."""

    kind = "target"
