"""Logging set-up: text for people, JSON lines for log pipelines (``GATEHOOK_LOG_FORMAT``).

Fields given with ``extra=`` (request_id, tenant, flow_type, trigger, action...) become JSON
keys. Nothing on the hot path logs configs, secrets or script sources.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "Sparse", "configure"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class Sparse:
    """A condition that may recur on every request is logged at most once per ``every_s``,
    however often it happens (its count goes in the line)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self._every = every_s
        self._said = float("-inf")  # when it was last logged (monotonic)

    def due(self) -> bool:
        """Whether to log it now (and, if so, not again for ``every_s``)."""
        now = time.monotonic()
        if now - self._said < self._every:
            return False
        self._said = now
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(fmt: str, level: str = "INFO") -> None:
    """Configure the root logger once, at process start."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
