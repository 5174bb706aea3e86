"""`recsys export <run id>`: a tracked run's checkpoint exported and logged back as a pyfunc model that
`mlflow models serve` serves (a real sqlite store and a real `mlflow models serve` process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.serving.artifact import ServedModel
from tests.export.test_artifact import raw_rows
from tests.serving.test_server import call, free_port, stop, stopped_output

TABLES = Path(__file__).resolve().parents[2] / "tables"


def train_command(synthetic_cache, uri: str, *extra: str) -> list[str]:
    return [
        "train", "--data", str(synthetic_cache.path), "--tables", str(TABLES / "hashing-10x.toml"), "--model", "dlrm",
        "--epochs", "1", "--batch-size", "4096", "--bottom-mlp", "16", "--top-mlp", "16", "--tracking-uri", uri,
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tracked_export(synthetic_cache, tmp_path_factory):
    """A tracked training run with checkpoints, exported in int8 by its run id."""
    root = tmp_path_factory.mktemp("mlflow_export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert main(train_command(synthetic_cache, uri, "--checkpoint-dir", str(root / "checkpoints"))) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])
    assert (
        main(["export", run.info.run_id, "-o", str(root / "model"), "--quantize", "int8", "--tracking-uri", uri]) == 0
    )
    return uri, run.info.run_id, root / "model"


def logged_model_uri(uri: str, run_id: str) -> str:
    return MlflowClient(uri).get_run(run_id).data.tags["recsys.exported.model-int8"]


def test_the_run_is_exported_and_its_pyfunc_model_predicts_like_the_artifact(tracked_export, synthetic_file):
    uri, run_id, directory = tracked_export
    served = ServedModel.load(directory)
    assert served.manifest["source"]["mlflow_run_id"] == run_id and served.manifest["precision"] == "int8"
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time < served_time(directory)  # the export kept how it ended
    assert run.data.metrics["export/int8/test_auc_change"] == served.manifest["quantization"]["auc_change"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(logged_model_uri(uri, run_id))
    finally:
        mlflow.set_tracking_uri(previous)
    rows = raw_rows(synthetic_file, 50)
    assert model.metadata.metadata["recsys_precision"] == "int8"
    frame = pd.DataFrame(rows)  # integer columns with gaps become floats with NaN: the pyfunc reads them back
    predicted = torch.tensor(model.predict(frame))
    torch.testing.assert_close(predicted, served.predict(rows), atol=1e-6, rtol=0)


def served_time(directory: Path) -> int:
    """When the artifact was written, in MLflow's milliseconds."""
    return int((directory / "manifest.json").stat().st_mtime * 1000)


def test_mlflow_models_serve_answers_with_the_same_predictions(tracked_export, synthetic_file):
    uri, run_id, directory = tracked_export
    port = free_port()
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"  # its uvicorn child
    command = ["mlflow", "models", "serve", "-m", logged_model_uri(uri, run_id), "--env-manager", "local"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [*command, "-p", str(port)], env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ping(f"http://127.0.0.1:{port}/ping"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not start: {stopped_output(process, log)}")
            time.sleep(0.5)
        rows = raw_rows(synthetic_file, 20)
        status, body = call(f"http://127.0.0.1:{port}/invocations", json.dumps({"dataframe_records": rows}).encode())
        assert status == 200
        predicted = torch.tensor(json.loads(body)["predictions"])
        torch.testing.assert_close(predicted, ServedModel.load(directory).predict(rows), atol=1e-6, rtol=0)
    finally:
        stop(process)  # mlflow and its uvicorn child
        log.close()


def ping(url: str) -> bool:
    try:
        return call(url, method="GET")[0] == 200
    except OSError:
        return False


def test_runs_that_cannot_be_exported_say_why(synthetic_cache, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(train_command(synthetic_cache, uri)) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])
    capsys.readouterr()
    assert main(["export", run.info.run_id, "-o", str(tmp_path / "model"), "--tracking-uri", uri]) == 2
    assert "recorded no checkpoint; train with --checkpoint-dir" in capsys.readouterr().err
    assert main(["export", "0" * 32, "-o", str(tmp_path / "model"), "--tracking-uri", uri]) == 2
    assert f"no MLflow run {'0' * 32}" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "model")]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()
