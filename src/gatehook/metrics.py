"""Prometheus metrics, and an HTTP port serving ``/metrics`` and ``/healthz``.

Off unless ``GATEHOOK_METRICS__PORT`` is set. Label cardinality is bounded: flow type, trigger,
decision and outcome are small closed sets; the tenant (and the action version) become labels
only with ``GATEHOOK_METRICS__TENANT_LABELS=true``.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gatehook.service.ports import Telemetry

__all__ = ["Metrics", "MetricsServer"]

_go_float = cast(Callable[[float], str], floatToGoString)  # "+Inf", "0.005": the text format's
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Series:
    """Counts (and, with ``buckets``, a histogram) per label values, kept in plain dicts.

    On the decision path a count is a dict update and an observation a ``bisect``;
    prometheus_client's children take a lock per count and walk the buckets in Python
    (BENCHMARKS.md, "The decision path's cost"). The registry reads copies at scrape time
    (``collect``).
    """

    def __init__(
        self, name: str, doc: str, labels: list[str], buckets: tuple[float, ...] = ()
    ) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, buckets
        self._les = [_go_float(b) for b in (*buckets, float("inf"))]
        self.counts: dict[tuple[str, ...], float] = {}
        self.sums: dict[tuple[str, ...], float] = {}
        self.hist: dict[tuple[str, ...], list[int]] = {}

    def inc(self, key: tuple[str, ...]) -> None:
        count = self.counts.get(key)
        if count is None and len(self.counts) >= _MAX_SERIES:
            return  # bounded like the label sets it comes from
        self.counts[key] = (count or 0) + 1

    def observe(self, key: tuple[str, ...], value: float) -> None:
        buckets = self.hist.get(key)
        if buckets is None:
            if len(self.hist) >= _MAX_SERIES:
                return  # bounded like the label sets it comes from
            buckets = self.hist[key] = [0] * (len(self.bounds) + 1)
        buckets[bisect_left(self.bounds, value)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def collect(self) -> CounterMetricFamily | HistogramMetricFamily:
        if not self.bounds:
            family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for key, n in dict(self.counts).items():  # a copy: the loop thread keeps counting
                family.add_metric(list(key), n)
            return family
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        sums = dict(self.sums)
        for key, counts in dict(self.hist).items():
            running, cumulative = 0, []
            for le, n in zip(self._les, list(counts), strict=True):
                running += n
                cumulative.append((le, float(running)))
            hist.add_metric(list(key), cumulative, sum_value=sums.get(key, 0.0))
        return hist


_MAX_SERIES = 50_000


class _Families(Collector):
    def __init__(self, series: list[_Series]) -> None:
        self._series = series

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily]:
        for series in self._series:
            yield series.collect()


class Metrics(Telemetry):
    """Telemetry into a Prometheus registry of its own (no global state)."""

    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self._tenant = tenant_labels
        extra = ["tenant"] if tenant_labels else []
        self._requests = _Series(
            "gatehook_trigger_requests",
            "Trigger requests answered",
            [*extra, "flow_type", "trigger", "outcome"],
        )
        self._latency = _Series(
            "gatehook_trigger_duration_seconds",
            "Time to answer a trigger request",
            ["flow_type", "trigger"],
            _BUCKETS,
        )
        self._actions = _Series(
            "gatehook_action_executions",
            "Action executions by outcome",
            [*extra, *(["action", "version"] if tenant_labels else []), "outcome", "error_kind"],
        )
        self._audit = _Series(
            "gatehook_audit_publish_seconds", "Audit publish and acknowledgement", [], _BUCKETS
        )
        self._audit_failures = _Series(
            "gatehook_audit_failures", "Audit batches not acknowledged", []
        )
        self._lag = _Series(
            "gatehook_event_loop_lag_seconds",
            "How late the worker's event-loop lag timer fired (a busy loop or process)",
            [],
            _BUCKETS,
        )
        self.registry.register(
            _Families(
                [
                    self._requests,
                    self._latency,
                    self._actions,
                    self._audit,
                    self._audit_failures,
                    self._lag,
                ]
            )
        )

    def request(
        self, tenant: str, flow_type: str, trigger: str, outcome: str, seconds: float
    ) -> None:
        key = (
            (tenant, flow_type, trigger, outcome) if self._tenant else (flow_type, trigger, outcome)
        )
        self._requests.inc(key)
        self._latency.observe((flow_type, trigger), seconds)

    def action(self, tenant: str, name: str, version: str, outcome: str, kind: str | None) -> None:
        key = (
            (tenant, name, version, outcome, kind or "") if self._tenant else (outcome, kind or "")
        )
        self._actions.inc(key)

    def audit(self, seconds: float, ok: bool) -> None:
        self._audit.observe((), seconds)
        if not ok:
            self._audit_failures.inc(())

    def loop_lag(self, seconds: float) -> None:
        """One observation of the event loop's lag (``process.loop.watch_lag``)."""
        self._lag.observe((), seconds)

    def add_gauges(self, read: Callable[[], dict[str, Any]]) -> None:
        """Export values read at scrape time (pool size, restarts, caches, webhooks...)."""
        self.registry.register(_Snapshot(read, self._tenant))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


class _Snapshot(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]], tenant_labels: bool = False) -> None:
        self._read = read
        self._tenant = tenant_labels

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
        pins = snap.get("deferred_pins")
        if pins is not None:
            yield GaugeMetricFamily(
                "gatehook_deferred_pins",
                "Sign-in pins decided without MongoDB, waiting to be written",
                value=pins["held"],
            )
            done = CounterMetricFamily(
                "gatehook_deferred_pins", "Sign-in pins deferred, by fate", labels=["result"]
            )
            for result in ("deferred", "written", "dropped"):
                done.add_metric([result], pins[result])
            yield done
        yield CounterMetricFamily(
            "gatehook_last_heads_served",
            "Requests decided on a tenant's last loaded flows: a change invalidated them and"
            " MongoDB did not answer their reload in time",
            value=snap.get("last_heads_served", 0),
        )
        lanes = snap.get("audit_lanes")
        if lanes is not None:
            yield GaugeMetricFamily(
                "gatehook_audit_lanes_down",
                "Audit lanes skipped because they do not acknowledge (probed until they do)",
                value=lanes["down"],
            )
            yield GaugeMetricFamily(
                "gatehook_audit_lanes_misplaced",
                "Audit lanes led by another node than their own at the last placement check:"
                " a node's death would pause them too (placement degraded)",
                value=lanes.get("misplaced", 0),
            )
            yield CounterMetricFamily(
                "gatehook_audit_failovers",
                "Decisions' writes sent to another lane after no acknowledgement in time",
                value=lanes["failovers"],
            )
            yield CounterMetricFamily(
                "gatehook_audit_write_backs_dropped",
                "Failed-over decision records not written back to their home lane (too many"
                " waiting): a retry of those requests is decided again",
                value=lanes["write_backs_dropped"],
            )
        deps = GaugeMetricFamily(
            "gatehook_dependency_up",
            "1 while a dependency answers (as of the last health check), else 0",
            labels=["dependency"],
        )
        for dependency, up in (snap.get("dependencies") or {}).items():
            deps.add_metric([dependency], 1.0 if up else 0.0)
        yield deps
        admission = snap.get("admission")
        if admission is not None:
            yield from self._admission(admission)

    def _admission(self, admission: dict[str, Any]) -> Iterable[Any]:
        """Requests refused at admission, in flight and limits cut: per tenant with tenant
        labels."""
        labels = ["tenant", "reason"] if self._tenant else ["reason"]
        refused = CounterMetricFamily(
            "gatehook_admission_refused",
            "Trigger requests refused at admission: a tenant over its share (tenant_share), or"
            " every slot taken (worker_full)",
            labels=labels,
        )
        for (tenant, reason), n in admission["refused"].items():
            refused.add_metric([tenant, reason] if self._tenant else [reason], n)
        yield refused
        if self._tenant:
            flight = GaugeMetricFamily(
                "gatehook_tenant_in_flight",
                "Trigger requests in flight, by tenant",
                labels=["tenant"],
            )
            for tenant, n in admission["in_flight"].items():
                flight.add_metric([tenant], n)
            yield flight
            cut = GaugeMetricFamily(
                "gatehook_tenant_limit_cut",
                "A tenant's limit of trigger requests in flight where it is cut for taking more"
                " than its share of the worker's time (service.admission)",
                labels=["tenant"],
            )
            for tenant, n in admission.get("cut", {}).items():
                cut.add_metric([tenant], n)
            yield cut


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
