"""The HTTP server of an exported model (FastAPI on uvicorn).

    POST /v1/predict   {"rows": [{raw field: value, ...}, ...]}   -> {"probabilities": [...]}
    POST /v1/lookup    {"feature": "C1", "values": [raw, ...]}   -> {"vectors": [[...], ...]}
    GET  /v1/metadata  the artifact's manifest (without its file checksums)
    GET  /healthz      {"status": "ok"}
    GET  /metrics      Prometheus text: requests by path and status, latency histogram, errors

Bad input of any kind (not JSON, wrong shape, unknown or missing field, wrong type, NaN, too many
rows, too large a body) is a 4xx answer whose `detail` says what was wrong; the server never
answers 500 for a request's content.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.fields import MISSING_ID, FieldError
from recsys.serving.artifact import ServedModel, features
from recsys.serving.rows import EncodedRows, FeatureIds, RawField, RowError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BadRequest(Exception):
    """A request the server refuses, with its HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Metrics:
    """Request counts by path and status, and a latency histogram, in Prometheus' text format."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.buckets: Counter = Counter()
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(path, status)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
            for bound in LATENCY_BUCKETS:
                if seconds <= bound:
                    self.buckets[bound] += 1

    def text(self) -> str:
        with self.lock:
            lines = ["# TYPE recsys_requests_total counter"]
            for (path, status), count in sorted(self.requests.items()):
                lines.append(f'recsys_requests_total{{path="{path}",status="{status}"}} {count}')
            errors = sum(count for (_, status), count in self.requests.items() if status >= 400)
            lines += ["# TYPE recsys_request_errors_total counter", f"recsys_request_errors_total {errors}"]
            lines.append("# TYPE recsys_request_seconds histogram")
            for bound in LATENCY_BUCKETS:
                lines.append(f'recsys_request_seconds_bucket{{le="{bound}"}} {self.buckets[bound]}')
            lines.append(f'recsys_request_seconds_bucket{{le="+Inf"}} {self.latency_count}')
            lines.append(f"recsys_request_seconds_sum {self.latency_sum}")
            lines.append(f"recsys_request_seconds_count {self.latency_count}")
            return "\n".join(lines) + "\n"


async def json_body(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"request body of {int(declared):,} bytes is over the limit of {max_bytes:,}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise BadRequest(413, f"request body is over the limit of {max_bytes:,} bytes")
    try:
        return json.loads(body, parse_constant=lambda name: float(name))
    except RecursionError:
        raise BadRequest(400, "request body is nested too deeply") from None
    except ValueError as error:  # not JSON, not UTF-8, or an integer of more digits than Python converts
        raise BadRequest(400, f"request body is not JSON the server can read: {str(error)[:200]}") from None


def listed(body: Any, key: str, max_rows: int) -> list:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BadRequest(422, f'expected a JSON object with a list "{key}"')
    if not body[key]:
        raise BadRequest(422, f'"{key}" is empty')
    if len(body[key]) > max_rows:
        raise BadRequest(413, f"{len(body[key]):,} {key} is over the limit of {max_rows:,} per request")
    return body[key]


def create_app(served: ServedModel, max_rows: int = 4096, max_bytes: int = 8 << 20) -> FastAPI:
    """The FastAPI app serving `served`."""
    app = FastAPI(title="recsys", docs_url=None, redoc_url=None)
    metrics = Metrics()
    model_lock = threading.Lock()

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except BadRequest as error:
            response = JSONResponse({"detail": error.detail}, status_code=error.status)
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(BadRequest)
    async def refuse(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        rows = listed(await json_body(request, max_bytes), "rows", max_rows)
        try:
            encoded = served.encoder.encode(rows)
        except RowError as error:
            raise BadRequest(422, str(error)) from None
        with model_lock:
            probabilities = served.predict_encoded(encoded)
        return JSONResponse({"probabilities": probabilities.tolist()})

    @app.post("/v1/lookup")
    async def lookup(request: Request) -> JSONResponse:
        body = await json_body(request, max_bytes)
        values = listed(body, "values", max_rows)
        feature = body.get("feature")
        field = served.encoder.by_name.get(feature) if isinstance(feature, str) else None
        if field is None or len(field.outputs) != 1 or field.outputs[0] not in served.encoder.sparse_features:
            known = [name for name, raw in served.encoder.by_name.items() if raw.outputs[:1] and
                     raw.outputs[0] in served.encoder.sparse_features and len(raw.outputs) == 1]  # fmt: skip
            raise BadRequest(422, f"unknown embedding feature {body.get('feature')!r}; known: {', '.join(known)}")
        column = encoded_values(field, values)
        with model_lock, torch.no_grad():
            pooled = served.model.lookup(lookup_features(served, field.outputs[0], column)).to_dict()
        return JSONResponse({"feature": field.name, "vectors": pooled[field.outputs[0]].tolist()})

    @app.get("/v1/metadata")
    async def metadata() -> JSONResponse:
        return JSONResponse({key: value for key, value in served.manifest.items() if key != "files"})

    @app.get("/healthz")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text())

    return app


def encoded_values(field: RawField, values: list) -> dict:
    """The field's prepared ids of `values`; a 422 naming the first refused value."""
    try:
        return field.encode_column(values)
    except FieldError:
        for index, value in enumerate(values):
            try:
                field.encode(value)
            except FieldError as error:
                raise BadRequest(422, f"values[{index}]: {field.name}: {error}") from None
        raise


def lookup_features(served: ServedModel, feature: str, column: dict) -> KeyedJaggedTensor:
    """A batch where `feature` holds the looked-up ids and every other feature the missing id."""
    looked_up = FeatureIds.of(column[feature])
    rows = len(looked_up.lengths)
    ids = {
        key: looked_up if key == feature else FeatureIds.of(np.full(rows, MISSING_ID, dtype=np.int64))
        for key in served.encoder.sparse_features
    }
    return features(EncodedRows(dense=np.zeros((rows, 0), dtype=np.float32), ids=ids))
