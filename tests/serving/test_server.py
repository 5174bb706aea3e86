"""A real `recsys serve` process on 127.0.0.1, hit by a real HTTP client: parity, bad input, metrics."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.export.artifact import export_model
from recsys.serving.artifact import ServedModel, features
from recsys.tables import spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.finished import finished_model
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


def stop(process: subprocess.Popen) -> None:
    """End a server started in its own session, children included; kill what does not stop in 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def stopped_output(process: subprocess.Popen, log) -> str:
    """The last output of a server that did not start (written to the file `log`), after stopping it."""
    stop(process)
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


@contextmanager
def running_server(directory: Path, *options: str) -> Iterator[str]:
    """A `recsys serve` process for the artifact in `directory` on a free port; its base URL until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "recsys", "serve", str(directory), "--port", str(port), *options]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a server writing more than a pipe holds never blocks
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
                raise RuntimeError(f"server did not start: {stopped_output(process, log)}")
            time.sleep(0.3)
        yield base
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="module")
def server(synthetic_cache, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=4096, progress=False)
    job = Job(
        synthetic_cache, spec_from_mapping({"strategy": "qr", "compression": 10}), "dlrm", config, dict(SMALL_MODEL)
    )
    result = train(job)
    directory = tmp_path_factory.mktemp("served") / "model"
    export_model(finished_model(job, result.model, result.metrics), directory)
    with running_server(directory, "--max-rows", "64") as base:
        yield base, ServedModel.load(directory)


def test_every_strategy_serves_over_http_what_it_trained(exported, synthetic_file):
    result, directory, _ = exported
    rows = raw_rows(synthetic_file, 50)
    encoded = ServedModel.load(directory).encoder.encode(rows)
    with torch.no_grad():
        trained = torch.sigmoid(result.model(torch.from_numpy(encoded.dense), features(encoded)))
    with running_server(directory) as base:
        status, body = call(f"{base}/v1/predict", json.dumps({"rows": rows}).encode())
    assert status == 200
    torch.testing.assert_close(torch.tensor(json.loads(body)["probabilities"]), trained, atol=1e-6, rtol=0)


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
    b"[" * 100_000 + b"]" * 100_000,  # nested deeper than a recursive parser goes
    b'{"rows": [{"I1": ' + b"9" * 5000 + b"}]}",  # more digits than Python converts to an int
    b'{"feature": ["C1"], "values": ["0a"]}',  # a feature name of the wrong JSON type
    b'{"feature": {"C1": 1}, "values": ["0a"]}',
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


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["label", *(f"I{index}" for index in range(1, 14)), *(f"C{index}" for index in range(1, 27)), "other"]


def answer_is_sound(base: str, path: str, body: bytes, rows: int | None = None) -> None:
    """200 with one probability per row, or 4xx with a detail; never a server error."""
    status, answer = call(f"{base}{path}", body)
    assert status == 200 or 400 <= status < 500, (path, body[:200], status, answer[:200])
    decoded = json.loads(answer)
    if status != 200:
        assert decoded["detail"]
    elif path == "/v1/predict" and rows is not None:
        assert len(decoded["probabilities"]) == rows and all(0 <= value <= 1 for value in decoded["probabilities"])


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON_VALUES)
def test_any_json_body_gets_an_answer_never_a_server_error(server, body):
    base, _ = server
    for path in ("/v1/predict", "/v1/lookup"):
        answer_is_sound(base, path, json.dumps(body).encode())


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_valid_rows_with_mutated_fields_get_an_answer_never_a_server_error(server, synthetic_file, data):
    base, _ = server
    rows = raw_rows(synthetic_file, 3)
    for _ in range(data.draw(st.integers(1, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        row[data.draw(st.sampled_from(FIELDS))] = data.draw(JSON_VALUES)
    answer_is_sound(base, "/v1/predict", json.dumps({"rows": rows}).encode(), rows=len(rows))
    feature = data.draw(st.sampled_from(FIELDS))
    values = data.draw(st.lists(JSON_VALUES, max_size=5))
    answer_is_sound(base, "/v1/lookup", json.dumps({"feature": feature, "values": values}).encode())
    assert call(f"{base}/v1/predict", json.dumps({"rows": raw_rows(synthetic_file, 2)}).encode())[0] == 200


def test_the_load_generator_keeps_its_rate_and_reports_percentiles(server, synthetic_file, tmp_path):
    base, _ = server
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"rows": raw_rows(synthetic_file, 1)}))
    loadgen = Path(__file__).resolve().parents[2] / "serving" / "loadgen.py"
    command = [sys.executable, str(loadgen), "--url", f"{base}/v1/predict", "--body", str(body), "--rates", "40",
               "--seconds", "1", "--warmup", "0.2", "--json"]  # fmt: skip
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert result["sent"] == 40 and result["errors"] == 0 and 0 < result["achieved_rate"] <= 41
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 1}')
    refused = subprocess.run([*command[:4], "--body", str(bad)], capture_output=True, text=True)
    assert refused.returncode != 0 and "does not answer 200" in refused.stderr
