"""A real `recsys serve` process on 127.0.0.1, hit by a real HTTP client: parity, bad input, metrics."""

from __future__ import annotations

import http.client
import json
import os
import select
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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

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
def running_server(directory: Path, *options: str, log=None) -> Iterator[str]:
    """A `recsys serve` process for the artifact in `directory` on a free port; its base URL until the block ends.

    The server's output goes to `log` (a binary file) when given, else to a temporary file.
    """
    port = free_port()
    command = [sys.executable, "-m", "recsys", "serve", str(directory), "--port", str(port), *options]
    log = log or tempfile.TemporaryFile()  # a file, not a pipe: a server writing more than a pipe holds never blocks
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


@dataclass
class Served:
    """The module's server: its URL, the artifact it serves, its log, and one valid request with its first answer."""

    base: str
    served: ServedModel
    log: BinaryIO
    valid_body: bytes
    valid_answer: bytes

    def __iter__(self) -> Iterator:
        return iter((self.base, self.served))

    def still_answers_as_before(self) -> None:
        """The valid request gets the very answer it got first: nothing sent in between changed the server."""
        assert call(f"{self.base}/v1/predict", self.valid_body) == (200, self.valid_answer)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


LIMITS = ("--max-rows", "64", "--header-timeout", "2", "--body-timeout", "2", "--max-connections", "24")


@pytest.fixture(scope="module")
def server(synthetic_cache, synthetic_file, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=4096, progress=False)
    job = Job(
        synthetic_cache, spec_from_mapping({"strategy": "qr", "compression": 10}), "dlrm", config, dict(SMALL_MODEL)
    )
    result = train(job)
    directory = tmp_path_factory.mktemp("served") / "model"
    export_model(finished_model(job, result.model, result.metrics), directory)
    log = tempfile.TemporaryFile()
    with running_server(directory, *LIMITS, log=log) as base:
        valid_body = json.dumps({"rows": raw_rows(synthetic_file, 3)}).encode()
        status, answer = call(f"{base}/v1/predict", valid_body)
        assert status == 200
        yield Served(base, ServedModel.load(directory), log, valid_body, answer)


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


def test_bad_bodies_get_4xx_and_the_server_keeps_serving(server):
    for body in BAD_BODIES:
        for path in ("/v1/predict", "/v1/lookup"):
            status, answer = call(f"{server.base}{path}", body)
            assert 400 <= status < 500, (path, body[:80], status, answer[:200])
            assert json.loads(answer)["detail"]
    server.still_answers_as_before()


def metric_samples(base: str) -> tuple[int, list]:
    """The size of `/metrics` and its samples, parsed by prometheus-client's own parser (which refuses bad text)."""
    status, body = call(f"{base}/metrics", method="GET")
    assert status == 200
    return len(body), [sample for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def test_metrics_labels_stay_bounded_and_the_text_valid_after_junk_paths(server):
    session = http.client.HTTPConnection("127.0.0.1", int(server.base.rsplit(":", 1)[1]), timeout=30)
    injection = "/%22%7D%20666%0Aevil_metric%7Bpath%3D%22x%22%7D%201%0A%01%7F"  # quote, brace, newline, control bytes
    junk = [injection, *(f"/junk/{index}/{'x' * 200}" for index in range(1500))]
    for path in junk:
        session.request("GET", path)
        response = session.getresponse()
        assert response.status == 404 and json.loads(response.read())["detail"]
    session.request("BREW", "/v1/predict")
    assert session.getresponse().status == 405
    session.close()
    size, samples = metric_samples(server.base)
    routes = {sample.labels["route"] for sample in samples if "route" in sample.labels}
    assert routes <= {"/v1/predict", "/v1/lookup", "/v1/metadata", "/healthz", "/metrics", "unmatched"}
    assert {sample.labels.get("method") for sample in samples if "method" in sample.labels} <= {"GET", "POST", "other"}
    unmatched = [s for s in samples if s.name == "recsys_requests_total" and s.labels["route"] == "unmatched"]
    assert sum(sample.value for sample in unmatched) >= len(junk)
    assert not any("evil" in sample.name for sample in samples)
    assert size < 20_000, size  # 1,500 distinct 200-byte paths, each a label, would be over 300 KB
    names = {sample.name for sample in samples}
    assert {"process_resident_memory_bytes", "process_open_fds", "recsys_request_seconds_bucket"} <= names


def raw_exchange(base: str, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` as raw bytes on a new connection and read the answer until the server closes it."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_detail(answer: bytes) -> tuple[int, str | None]:
    """The status of a raw HTTP answer and the `detail` of its JSON body (None when there is none)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return status, None


ENDPOINTS = ["/v1/predict", "/v1/lookup", "/v1/metadata", "/healthz", "/metrics", "/nowhere"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"]
TOKENS = st.text(st.characters(codec="latin-1"), max_size=30).map(lambda text: text.encode("latin-1"))


def answered_with_detail(answer: bytes, method: bytes) -> None:
    status, detail = status_and_detail(answer)
    assert status < 500, answer[:300]
    assert status < 400 or detail or method == b"HEAD", answer[:300]


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    method=st.sampled_from([name.encode() for name in METHODS]) | TOKENS,
    path=st.sampled_from([path.encode() for path in ENDPOINTS]) | TOKENS.map(lambda path: b"/" + path),
    headers=st.lists(st.tuples(TOKENS, TOKENS), max_size=4),
)
def test_any_request_line_and_headers_get_a_4xx_with_a_detail_never_a_server_error(server, method, path, headers):
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: test", b"Connection: close", b"Content-Length: 0"]
    lines += [name + b": " + value for name, value in headers if name.lower() not in (b"transfer-encoding", b"expect")]
    answered_with_detail(raw_exchange(server.base, b"\r\n".join(lines) + b"\r\n\r\n"), method)
    server.still_answers_as_before()


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


def mutated_body(data: st.DataObject, rows: list[dict]) -> bytes:
    """A valid predict or lookup body with some fields, keys or the whole structure replaced by arbitrary JSON."""
    rows = [dict(row) for row in rows]
    for _ in range(data.draw(st.integers(1, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        row[data.draw(st.sampled_from(FIELDS))] = data.draw(JSON_VALUES)
    lookup = {"feature": data.draw(st.sampled_from(FIELDS) | JSON_VALUES), "values": data.draw(JSON_VALUES)}
    return json.dumps(data.draw(st.sampled_from([{"rows": rows}, lookup, rows, {"rows": rows, **lookup}]))).encode()


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_body_to_any_endpoint_gets_an_answer_never_a_server_error(server, synthetic_file, data):
    """Arbitrary bytes, arbitrary JSON and mutated valid bodies, to every endpoint with every method."""
    body = data.draw(
        st.binary(max_size=300)
        | JSON_VALUES.map(lambda value: json.dumps(value).encode())
        | st.just(None).map(lambda _: mutated_body(data, raw_rows(synthetic_file, 3)))
    )
    path = data.draw(st.sampled_from(ENDPOINTS))
    method = data.draw(st.sampled_from(METHODS))
    status, answer = call(f"{server.base}{path}", body, method=method)
    assert status < 500, (method, path, body[:200], status, answer[:200])
    decoded = json.loads(answer) if status != 200 or path != "/metrics" else None
    if status >= 400:
        assert decoded["detail"]
    elif path == "/v1/predict":
        assert all(0 <= value <= 1 for value in decoded["probabilities"])
    server.still_answers_as_before()


def test_slow_clients_are_cut_off_while_a_normal_client_is_answered(server, synthetic_file):
    """Clients that trickle a request's head one byte at a time get a 408 at the header deadline (2 s here), each
    byte not restarting the clock; meanwhile a normal client is answered at once."""
    host, port = server.base.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(12)]
    for connection in slow:
        connection.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: test\r\n")
    assert call(f"{server.base}/v1/predict", server.valid_body) == (200, server.valid_answer)
    answers: dict[socket.socket, bytes] = {}
    started = time.monotonic()
    while len(answers) < len(slow) and time.monotonic() - started < 6:
        for connection in slow:
            if connection in answers:
                continue
            if select.select([connection], [], [], 0)[0]:
                answers[connection] = connection.recv(65536)
            else:
                connection.sendall(b"X")  # one more byte of a header that never ends
        time.sleep(0.25)
    for connection in slow:
        connection.close()
    assert len(answers) == len(slow)
    assert all(status_and_detail(answer) == (408, "no complete request head within 2 s") for answer in answers.values())


def test_a_connection_over_the_cap_gets_a_503_at_once_and_the_server_recovers(server):
    host, port = server.base.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(24)]
    time.sleep(0.3)  # the server accepts them before the next one
    status, detail = status_and_detail(raw_exchange(server.base, b"", timeout=5))
    assert status == 503 and "24 connections" in detail
    for connection in idle:
        connection.close()
    time.sleep(0.3)
    server.still_answers_as_before()


def test_a_slow_body_gets_a_408_and_a_vanished_client_is_no_application_error(server):
    head = b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    answer = raw_exchange(server.base, head + b'{"rows": ')  # the server closes the connection after its 408
    assert answer.count(b"HTTP/1.1") == 1 and status_and_detail(answer) == (
        408, "request body did not arrive within 2 s",
    )  # fmt: skip
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head + b'{"rows": ')
    time.sleep(0.5)
    server.still_answers_as_before()
    output = server.output()
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output[-2000:]


def test_metadata_is_the_manifest_without_file_checksums(server):
    base, _ = server
    status, body = call(f"{base}/v1/metadata", method="GET")
    assert status == 200 and json.loads(body)["tables"]["strategy"] == "qr" and "files" not in json.loads(body)


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
