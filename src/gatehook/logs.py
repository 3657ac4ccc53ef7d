"""Logging set-up: text for people, JSON lines for log pipelines (``GATEHOOK_LOG_FORMAT``).

Fields given with ``extra=`` (request_id, tenant, flow_type, trigger, action...) become JSON
keys. Nothing on the hot path logs configs, secrets or script sources.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "Sparse", "TextFormatter", "configure", "one_line"]

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


_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F) if i not in (0x09,)}
_ESCAPES |= {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters written as escapes: a log line
    that quotes what a tenant's script or a caller said (an error, a header) stays one line,
    and no one can forge the next line of the log."""
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """``at level logger message``, the message kept on one line (``one_line``); a traceback
    the record carries follows on its own lines, as tracebacks do."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


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
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
