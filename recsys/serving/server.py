"""The HTTP server of an exported model (FastAPI on uvicorn).

    POST /v1/predict   {"rows": [{raw field: value, ...}, ...]}   -> {"probabilities": [...]}
    POST /v1/lookup    {"feature": "C1", "values": [raw, ...]}   -> {"vectors": [[...], ...]}
    GET  /v1/metadata  the artifact's manifest (without its file checksums)
    GET  /healthz      {"status": "ok"}
    GET  /metrics      Prometheus text (`metrics.py`): requests by route and status class, latency, process

Bad input of any kind (not JSON, nested too deeply, wrong shape or JSON type, unknown or missing field,
NaN, too many rows, too large or too slow a body, an unknown path or method) is a 4xx answer whose
`detail` says what was wrong; the server never answers 500 for a request's content. Bodies are parsed
by orjson, which bounds nesting (1,024 levels) and reads any number (big integers become floats).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.fields import MISSING_ID, FieldError
from recsys.serving.artifact import ServedModel, features
from recsys.serving.metrics import MeasuredApp, ServerMetrics
from recsys.serving.rows import EncodedRows, FeatureIds, RawField, RowError

CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer
BODY_LEFT_UNREAD = frozenset({408, 413, CLIENT_CLOSED})  # refusals that end the connection


class BadRequest(Exception):
    """A request the server refuses, with its HTTP status and a message for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class OrjsonResponse(JSONResponse):
    """A JSON answer encoded by orjson (several times faster than the standard library on lists of floats)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def json_body(request: Request, max_bytes: int, timeout: float) -> Any:
    """The request's body parsed as JSON, within `max_bytes` and `timeout` seconds; a `BadRequest` otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"request body of {int(declared):,} bytes is over the limit of {max_bytes:,}")
    try:
        async with asyncio.timeout(timeout):
            body = await read_body(request, max_bytes)
    except TimeoutError:
        raise BadRequest(408, f"request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise BadRequest(CLIENT_CLOSED, "the client closed the connection before its body ended") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:  # not JSON, not UTF-8, nested deeper than 1,024 levels, NaN
        raise BadRequest(400, f"request body is not JSON the server can read: {str(error)[:200]}") from None


async def read_body(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"request body is over the limit of {max_bytes:,} bytes")
    return b"".join(chunks)


def listed(body: Any, key: str, max_rows: int) -> list:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise BadRequest(422, f'expected a JSON object with a list "{key}"')
    if not body[key]:
        raise BadRequest(422, f'"{key}" is empty')
    if len(body[key]) > max_rows:
        raise BadRequest(413, f"{len(body[key]):,} {key} is over the limit of {max_rows:,} per request")
    return body[key]


def create_app(
    served: ServedModel, max_rows: int = 4096, max_bytes: int = 8 << 20, body_timeout: float = 30.0
) -> MeasuredApp:
    """The ASGI app serving `served`: FastAPI's routes inside the metrics middleware."""
    app = FastAPI(title="recsys", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ServerMetrics()
    model_lock = threading.Lock()

    @app.exception_handler(BadRequest)
    async def refuse(request: Request, error: BadRequest) -> OrjsonResponse:
        unread = error.status in BODY_LEFT_UNREAD  # the rest of the body would be read as the next request
        headers = {"connection": "close"} if unread else None
        return OrjsonResponse({"detail": error.detail}, status_code=error.status, headers=headers)

    @app.post("/v1/predict")
    async def predict(request: Request) -> OrjsonResponse:
        rows = listed(await json_body(request, max_bytes, body_timeout), "rows", max_rows)
        try:
            encoded = served.encoder.encode(rows)
        except RowError as error:
            raise BadRequest(422, str(error)) from None
        with model_lock:
            probabilities = served.predict_encoded(encoded)
        return OrjsonResponse({"probabilities": as_array(probabilities)})

    @app.post("/v1/lookup")
    async def lookup(request: Request) -> OrjsonResponse:
        body = await json_body(request, max_bytes, body_timeout)
        values = listed(body, "values", max_rows)
        field = embedding_field(served, body.get("feature"))
        column = encoded_values(field, values)
        with model_lock, torch.no_grad():
            pooled = served.model.lookup(lookup_features(served, field.outputs[0], column)).to_dict()
        return OrjsonResponse({"feature": field.name, "vectors": as_array(pooled[field.outputs[0]])})

    @app.get("/v1/metadata")
    async def metadata() -> OrjsonResponse:
        return OrjsonResponse({key: value for key, value in served.manifest.items() if key != "files"})

    @app.get("/healthz")
    async def health() -> OrjsonResponse:
        return OrjsonResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        text, content_type = metrics.exposition()
        return Response(text, media_type=content_type)

    return MeasuredApp(app, metrics)


def as_array(values: torch.Tensor) -> np.ndarray:
    """`values` as a contiguous float32 array for orjson (float32 written as its shortest exact decimal)."""
    return np.ascontiguousarray(values.detach().to(torch.float32).numpy())


def embedding_field(served: ServedModel, feature: Any) -> RawField:
    """The raw field `feature` names if it has one embedding table of its own; a 422 listing those that do."""
    known = {
        name: field for name, field in served.encoder.by_name.items()
        if len(field.outputs) == 1 and field.outputs[0] in served.encoder.sparse_features
    }  # fmt: skip
    if not isinstance(feature, str) or feature not in known:
        shown = repr(feature)[:80]
        raise BadRequest(422, f'"feature" must name an embedding feature, not {shown}; known: {", ".join(known)}')
    return known[feature]


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
