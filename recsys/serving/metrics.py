"""The server's Prometheus metrics, kept by `prometheus-client` (its text format, escaping and process collector).

Every label takes values from a closed set, so `/metrics` stays the same size whatever clients send:
`route` is the path template of a matched route or `unmatched`, `method` a standard method or `other`,
`status` the class of the answer (`2xx`, `4xx`, `5xx`, ...). The process collector adds the server's
resident memory, CPU seconds and open file descriptors.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
UNMATCHED = "unmatched"


class ServerMetrics:
    """The counters and histograms of one server, in a registry of its own (two apps in a process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        labels = ("route", "method", "status")
        self.requests = Counter(
            "recsys_requests", "Requests answered, by route template, method and status class.", labels,
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "recsys_request_seconds", "Time from a request's arrival to its answer, by route template.", ("route",),
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, f"{status // 100}xx").inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text `/metrics` answers, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_of(scope: Scope) -> str:
    """The path template of the route that took the request (`/v1/predict`), or `unmatched`: never the raw path."""
    route = scope.get("route")
    return getattr(route, "path", UNMATCHED) if route is not None else UNMATCHED


class MeasuredApp:
    """ASGI middleware counting every HTTP answer, 5xx included, with its latency.

    It wraps the whole FastAPI app, so a handler that raised (answered 500 by FastAPI's error
    middleware inside) is counted too; a request that raised before any answer counts as a 500.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            self.metrics.observe(route_of(scope), scope["method"], status, time.perf_counter() - started)
