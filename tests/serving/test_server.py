"""A real `recsys serve` process on 127.0.0.1, hit by a real HTTP client: parity, bad input, metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch

from recsys.export.artifact import export_model
from recsys.serving.artifact import ServedModel
from recsys.tables import spec_from_mapping
from recsys.train.compaction import serving_model
from recsys.train.config import TrainConfig
from recsys.train.job import Job
from recsys.train.loop import train
from tests.export.test_artifact import raw_rows
from tests.train.conftest import SMALL_MODEL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def server(synthetic_cache, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=4096, progress=False)
    job = Job(
        synthetic_cache, spec_from_mapping({"strategy": "qr", "compression": 10}), "dlrm", config, dict(SMALL_MODEL)
    )
    result = train(job)
    directory = tmp_path_factory.mktemp("served") / "model"
    export_model(job, serving_model(job, result.model), directory, result.metrics)
    port = free_port()
    command = [sys.executable, "-m", "recsys", "serve", str(directory), "--port", str(port), "--max-rows", "64"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if call(f"{base}/healthz", method="GET")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {process.stdout.read().decode()[-2000:]}")
            time.sleep(0.3)
        yield base, ServedModel.load(directory)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_predictions_over_http_equal_the_artifact(server, synthetic_file):
    base, served = server
    rows = raw_rows(synthetic_file, 50)
    status, body = call(f"{base}/v1/predict", json.dumps({"rows": rows}).encode())
    assert status == 200
    torch.testing.assert_close(torch.tensor(json.loads(body)["probabilities"]), served.predict(rows), atol=1e-6, rtol=0)


def test_lookup_returns_the_embedding_of_each_raw_value(server):
    base, served = server
    status, body = call(f"{base}/v1/lookup", json.dumps({"feature": "C3", "values": ["0000000a", None]}).encode())
    assert status == 200
    vectors = json.loads(body)["vectors"]
    assert len(vectors) == 2 and len(vectors[0]) == served.model.lookup.embedding_dim
    assert vectors[0] != vectors[1]


BAD_BODIES = [
    b"not json",
    b"",
    b"[]",
    b'{"rows": 3}',
    b'{"rows": []}',
    b'{"rows": [1]}',
    b'{"rows": [{"I1": 1}]}',
    json.dumps({"rows": [{"nope": 1}]}).encode(),
    json.dumps({"rows": [{}] * 65}).encode(),
    b'{"rows": [{"I1": NaN}]}',
    '{"rows": ["\u00e9"]}'.encode("latin-1"),
]


def test_bad_bodies_get_4xx_and_the_server_keeps_serving(server, synthetic_file):
    base, _ = server
    generator = random.Random(0)
    fuzzed = [bytes(generator.getrandbits(8) for _ in range(generator.randint(0, 200))) for _ in range(100)]
    for body in BAD_BODIES + fuzzed:
        for path in ("/v1/predict", "/v1/lookup"):
            status, answer = call(f"{base}{path}", body)
            assert 400 <= status < 500, (path, body[:80], status, answer[:200])
            assert json.loads(answer)["detail"]
    assert call(f"{base}/v1/predict", json.dumps({"rows": raw_rows(synthetic_file, 2)}).encode())[0] == 200


def test_metadata_and_metrics(server):
    base, _ = server
    status, body = call(f"{base}/v1/metadata", method="GET")
    assert status == 200 and json.loads(body)["tables"]["strategy"] == "qr" and "files" not in json.loads(body)
    status, body = call(f"{base}/metrics", method="GET")
    text = body.decode()
    assert status == 200 and 'recsys_requests_total{path="/healthz",status="200"}' in text
    assert "recsys_request_seconds_bucket" in text and "recsys_request_errors_total" in text
