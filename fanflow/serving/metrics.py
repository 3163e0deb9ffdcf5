"""Prometheus metrics of a server: request counts and latency histograms per endpoint.

Each app has its own registry (several servers may live in one process, as in tests), served
at ``GET /metrics``. Endpoints are labelled by their route template
(``/v2/models/{name}/infer``), never by the raw path, so a client cannot grow the label set.
A client that hangs up before its answer is counted in ``fanflow_http_disconnects_total``,
not as a request answered: it is neither the server's error nor a success.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DISCONNECTED = "fanflow.disconnected"  # set in a request's scope when its client hung up
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class LabelCache:
    """A labelled metric's children by their label values, kept once made: prometheus_client
    checks the values and takes a lock on every ``labels()`` call, and each inference request
    counts into several metrics. Only for values from a small, fixed set (routes, methods,
    statuses, member names, outcomes)."""

    def __init__(self, metric) -> None:
        self._labels = metric.labels
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fanflow_http_requests",
            "HTTP requests answered, by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "fanflow_http_disconnects",
            "Requests whose client hung up before the answer, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.refused = Counter(
            "fanflow_http_refused",
            "Connections refused before a request reached the app (slow, oversized or too many), by status",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fanflow_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def counter(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, documentation, list(labels), registry=self.registry)

    def histogram(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(name, documentation, list(labels), buckets=LATENCY_BUCKETS, registry=self.registry)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """ASGI middleware counting and timing every HTTP request into ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router records the matched route in the (shared) scope.
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            if scope.get(DISCONNECTED):
                self.metrics.disconnects.labels(endpoint).inc()
            else:
                self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
