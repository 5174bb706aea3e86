"""A sweep against a real `mlflow server` on 127.0.0.1 over HTTP (sqlite backend in a temporary
directory), read back with the MLflow client; the server and all its workers are stopped whatever
happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.sweep.runner import run_sweep


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's whole session (uvicorn and its workers), then SIGKILL what is left."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or the group lives on as its zombie
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(url, process, log)
        yield url
    finally:
        stop(process)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of the server is left


def test_a_sweep_over_http_is_readable_from_the_server(mlflow_server, synthetic_cache, tmp_path):
    path = tmp_path / "served.toml"
    path.write_text(
        f"""
name = "served"
[data]
prepared = "{synthetic_cache.path}"
[grid]
models = ["lr"]
strategies = ["full", "hashing"]
compressions = [10]
seeds = [0]
[train]
batch_size = 4096
"""
    )
    outcome = run_sweep(path, mlflow_server, tmp_path / "cache")
    assert sorted(outcome.done) == ["lr/full/seed0", "lr/hashing-10x/seed0"] and not outcome.failed
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("served")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'", max_results=10
    )
    assert {run.info.status for run in children} == {"FINISHED"} and len(children) == 2
    for run in children:
        assert 0.5 < run.data.metrics["test/auc"] <= 1
        assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
    assert [item.path for item in client.list_artifacts(outcome.parent_run_id, "experiment")] == [
        "experiment/served.toml"
    ]
