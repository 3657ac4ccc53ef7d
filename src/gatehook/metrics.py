"""Prometheus metrics, and an HTTP port serving ``/metrics`` and ``/healthz``.

Off unless ``GATEHOOK_METRICS__PORT`` is set. Label cardinality is bounded: flow type, trigger,
decision and outcome are small closed sets; the tenant (and the action version) become labels
only with ``GATEHOOK_METRICS__TENANT_LABELS=true``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gatehook.service.ports import Telemetry

__all__ = ["Metrics", "MetricsServer"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics(Telemetry):
    """Telemetry into a Prometheus registry of its own (no global state)."""

    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self._tenant = tenant_labels
        self._children: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        extra = ["tenant"] if tenant_labels else []
        self._requests = Counter(
            "gatehook_trigger_requests",
            "Trigger requests answered",
            [*extra, "flow_type", "trigger", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "gatehook_trigger_duration_seconds",
            "Time to answer a trigger request",
            ["flow_type", "trigger"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._actions = Counter(
            "gatehook_action_executions",
            "Action executions by outcome",
            [*extra, *(["action", "version"] if tenant_labels else []), "outcome", "error_kind"],
            registry=self.registry,
        )
        self._audit = Histogram(
            "gatehook_audit_publish_seconds",
            "Audit publish and acknowledgement",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._audit_failures = Counter(
            "gatehook_audit_failures", "Audit batches not acknowledged", registry=self.registry
        )

    def request(
        self, tenant: str, flow_type: str, trigger: str, outcome: str, seconds: float
    ) -> None:
        key = (tenant if self._tenant else "", flow_type, trigger, outcome)
        child = self._children.get(key)
        if child is None:  # labels() costs more than the count: look each series up once
            labels = [tenant] if self._tenant else []
            child = (
                self._requests.labels(*labels, flow_type, trigger, outcome),
                self._latency.labels(flow_type, trigger),
            )
            self._remember(key, child)
        child[0].inc()
        child[1].observe(seconds)

    def action(self, tenant: str, name: str, version: str, outcome: str, kind: str | None) -> None:
        key = (tenant, name, version, outcome, kind) if self._tenant else (outcome, kind)
        child = self._children.get(key)
        if child is None:
            labels = [tenant, name, version] if self._tenant else []
            child = (self._actions.labels(*labels, outcome, kind or ""),)
            self._remember(key, child)
        child[0].inc()

    def _remember(self, key: tuple[Any, ...], child: tuple[Any, ...]) -> None:
        if len(self._children) > 50_000:  # tenant labels on: bounded like the series
            self._children.clear()
        self._children[key] = child

    def audit(self, seconds: float, ok: bool) -> None:
        self._audit.observe(seconds)
        if not ok:
            self._audit_failures.inc()

    def add_gauges(self, read: Callable[[], dict[str, Any]]) -> None:
        """Export values read at scrape time (pool size, restarts, caches, webhooks...)."""
        self.registry.register(_Snapshot(read))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _Snapshot(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        snap = self._read()
        yield GaugeMetricFamily(
            "gatehook_sandbox_children", "Sandbox children serving", value=snap["sandbox_children"]
        )
        yield GaugeMetricFamily(
            "gatehook_sandbox_queue_depth", "Calls waiting in children", value=snap["sandbox_queue"]
        )
        yield CounterMetricFamily(
            "gatehook_sandbox_restarts", "Sandbox children replaced", value=snap["sandbox_restarts"]
        )
        yield GaugeMetricFamily(
            "gatehook_trigger_in_flight", "Trigger requests in flight", value=snap["in_flight"]
        )
        yield CounterMetricFamily(
            "gatehook_trigger_shed", "Requests shed (overload)", value=snap["shed"]
        )
        caches = CounterMetricFamily(
            "gatehook_cache_lookups", "Hot-path cache lookups", labels=["cache", "result"]
        )
        for cache, (hits, misses) in snap["caches"].items():
            caches.add_metric([cache, "hit"], hits)
            caches.add_metric([cache, "miss"], misses)
        yield caches
        hooks = CounterMetricFamily(
            "gatehook_webhook_deliveries", "Webhook delivery outcomes", labels=["outcome"]
        )
        for outcome, n in snap["webhooks"].items():
            hooks.add_metric([outcome], n)
        yield hooks


class MetricsServer:
    """``/metrics`` (Prometheus) and ``/healthz`` (readiness JSON, 200 or 503) on a port."""

    def __init__(
        self, metrics: Metrics, health: Callable[[], dict[str, Any]], host: str, port: int
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, status, kind = metrics.render(), 200, "text/plain; version=0.0.4"
                elif self.path in ("/healthz", "/readyz"):
                    snap = health()
                    body = json.dumps(snap).encode()
                    status = 200 if snap.get("ready") else 503
                    kind = "application/json"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.port = int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
