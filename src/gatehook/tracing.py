"""OpenTelemetry tracing, when the ``otel`` extra is installed; nothing at all otherwise.

A span per trigger request (its parent taken from the ``traceparent`` header the login
service sent over NATS) and a child span per action run. With no OpenTelemetry installed, or
no tracer provider configured, the calls cost next to nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["action_span", "request_span", "tracing_enabled"]

_tracer: Any = None
_propagate: Any = None
_server_kind: Any = None
_trace: Any = None
_unconfigured: Any = ()
try:  # the optional extra
    from opentelemetry import propagate as _otel_propagate
    from opentelemetry import trace as _otel_trace

    _tracer = _otel_trace.get_tracer("gatehook")
    _propagate = _otel_propagate
    _server_kind = _otel_trace.SpanKind.SERVER
    _trace = _otel_trace
    _unconfigured = _otel_trace.ProxyTracerProvider
except ImportError:  # pragma: no cover - exercised when the extra is absent
    pass


_checked_at = -1.0
_on = False


def _enabled() -> bool:
    """Installed and given a tracer provider (the API alone only makes no-op spans)."""
    return _trace is not None and not isinstance(_trace.get_tracer_provider(), _unconfigured)


def tracing_enabled() -> bool:
    """``_enabled()``, looked up at most every 0.5 s: the provider lookup reads the process
    environment, which cost more than a small action on the decision path. A provider, once
    set, cannot be replaced (OpenTelemetry's rule), so "on" stays on."""
    global _checked_at, _on
    if _on:
        return True
    if _trace is None:
        return False
    now = time.monotonic()
    # set_tracer_provider() shows at once; a provider named in the environment within 0.5 s
    if getattr(_trace, "_TRACER_PROVIDER", None) is not None or now - _checked_at >= 0.5:
        _checked_at = now
        _on = _enabled()
    return _on


@contextlib.contextmanager
def request_span(headers: Mapping[str, str] | None, attributes: dict[str, Any]) -> Iterator[Any]:
    """The span of one trigger request, continuing the caller's trace if it sent one."""
    if not _enabled():
        yield None
        return
    parent = _propagate.extract(dict(headers or {}))
    slot = f"{attributes.get('gatehook.flow_type')}.{attributes.get('gatehook.trigger')}"
    name = f"gatehook.trigger {slot}"
    with _tracer.start_as_current_span(
        name, context=parent, kind=_server_kind, attributes=attributes
    ) as span:
        yield span


@contextlib.contextmanager
def action_span(name: str, version: str) -> Iterator[Any]:
    """The span of one action run (a child of the current request span)."""
    if not _enabled():
        yield None
        return
    with _tracer.start_as_current_span(
        f"gatehook.action {name}@{version}",
        attributes={"gatehook.action": name, "gatehook.version": version},
    ) as span:
        yield span
