"""The metrics middleware counts every answer, a handler's crash (5xx) included, under bounded labels."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from recsys.serving.metrics import MeasuredApp, ServerMetrics


def app_with_a_crashing_route() -> tuple[MeasuredApp, ServerMetrics]:
    app = FastAPI()

    @app.get("/fine/{name}")
    async def fine(name: str) -> dict:
        return {"name": name}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug in a handler")

    metrics = ServerMetrics()
    return MeasuredApp(app, metrics), metrics


def status_of(app: MeasuredApp, method: str, path: str) -> int:
    """Send one request to the ASGI app in this process and return the status it answered."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "headers": [], "root_path": "",
        "server": ("test", 80), "client": ("client", 1),
    }  # fmt: skip
    try:
        asyncio.run(app(scope, receive, send))
    except RuntimeError as error:
        assert str(error) == "a bug in a handler"
    return next(message["status"] for message in sent if message["type"] == "http.response.start")


def request_counts(metrics: ServerMetrics) -> dict[tuple[str, str, str], float]:
    text, _ = metrics.exposition()
    return {
        (sample.labels["route"], sample.labels["method"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "recsys_requests_total"
    }


def test_every_answer_is_counted_by_route_template_method_and_status_class():
    app, metrics = app_with_a_crashing_route()
    statuses = [
        status_of(app, "GET", "/fine/a"),
        status_of(app, "GET", "/fine/b"),
        status_of(app, "GET", "/boom"),
        status_of(app, "GET", "/nowhere/1"),
        status_of(app, "GET", '/nowhere/"}\n'),
        status_of(app, "BREW", "/fine/c"),
    ]
    assert statuses == [200, 200, 500, 404, 404, 405]
    assert request_counts(metrics) == {
        ("/fine/{name}", "GET", "2xx"): 2.0,
        ("/boom", "GET", "5xx"): 1.0,
        ("unmatched", "GET", "4xx"): 2.0,
        ("/fine/{name}", "other", "4xx"): 1.0,
    }
