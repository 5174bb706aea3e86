"""Tracking: a run read back from a real sqlite MLflow store; an unreachable store stops before training."""

from __future__ import annotations

import json
import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from recsys.cli.workflow import train_and_track
from recsys.tables import spec_from_mapping
from recsys.tracking import MLflowTracker, TrackingUnavailable
from recsys.train.config import TrainConfig
from recsys.train.events import Broadcast, Listener
from recsys.train.job import Job
from recsys.train.loop import train

REQUIRED_METRICS = {
    "train/loss", "val/auc", "val/logloss", "test/auc", "test/logloss", "table/param_bytes",
    "table/total_bytes", "table/compression", "train/samples_per_s",
}  # fmt: skip


def write_spec(tmp_path, text: str):
    path = tmp_path / "hashing.toml"
    path.write_text(text)
    return path


def test_run_is_recorded_and_readable(synthetic_cache, synthetic_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_text = 'strategy = "hashing"\nembedding_dim = 16\ncompression = 10\n'
    config = TrainConfig(batch_size=512, progress=False, log_every=5)
    result, run_id = train_and_track(
        data=synthetic_cache.path,
        tables=write_spec(tmp_path, spec_text),
        model="dlrm",
        config=config,
        model_overrides={"bottom_mlp": (32,), "top_mlp": (32,)},
        tracking_uri=uri,
        experiment="test",
        run_name="hashing-10x",
    )
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "hashing-10x"
    assert REQUIRED_METRICS <= set(run.data.metrics)
    assert run.data.metrics["test/auc"] == pytest.approx(result.metrics["test/auc"])
    assert run.data.metrics["table/total_bytes"] == result.memory.total_bytes
    assert run.data.params["tables.strategy"] == "hashing"
    assert run.data.params["tables.compression"] == "10.0"
    assert run.data.params["train.batch_size"] == "512"
    assert run.data.params["model.bottom_mlp"] == "(32,)"
    assert run.data.tags["strategy"] == "hashing"
    assert run.data.tags["model"] == "dlrm"
    assert run.data.tags["dataset"] == "criteo"
    assert (run.data.tags["budget"], run.data.tags["seed"], run.data.tags["embedding_dim"]) == ("10x", "0", "16")
    achieved = run.data.metrics["table/full_bytes"] / run.data.metrics["table/total_bytes"]
    assert float(run.data.tags["compression"]) == pytest.approx(achieved, rel=5e-3) and 9 < achieved < 11
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens its runs table
    inputs = {
        tag.value: entry.dataset
        for entry in run.inputs.dataset_inputs
        for tag in entry.tags
        if tag.key == "mlflow.data.context"
    }
    assert sorted(inputs) == ["test", "training", "validation"]
    assert {dataset.name for dataset in inputs.values()} == {"criteo"}
    assert len({dataset.digest for dataset in inputs.values()}) == 3
    profiles = {context: json.loads(dataset.profile) for context, dataset in inputs.items()}
    rows_in_file = synthetic_file.read_bytes().count(b"\n")
    assert sum(profile["rows"] for profile in profiles.values()) == rows_in_file  # no bad rows in it
    assert profiles["training"]["rows"] == profiles["test"]["rows_per_split"]["train"] > rows_in_file * 0.7
    assert profiles["training"]["sources"] == [str(synthetic_file.resolve())]
    columns = {column["name"]: column["type"] for column in json.loads(inputs["test"].schema)["mlflow_colspec"]}
    assert columns["label"] == "float" and columns["I1"] == "float" and columns["C1"] == "long"
    losses = client.get_metric_history(run_id, "train/loss")
    steps = [metric.step for metric in losses]
    assert steps == sorted(steps) and len(steps) >= 12 and steps[0] == 5
    artifact = client.download_artifacts(run_id, "tables.toml", str(tmp_path / "download"))
    assert open(artifact).read() == spec_text
    assert "table_wise" in open(client.download_artifacts(run_id, "sharding_plan.txt", str(tmp_path))).read()


def test_unreachable_server_stops_before_training(synthetic_cache, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(TrackingUnavailable, match=f"127.0.0.1:{port}.*--no-tracking"):
        train_and_track(
            data=synthetic_cache.path,
            tables=write_spec(tmp_path, 'strategy = "full"\n'),
            model="dlrm",
            config=TrainConfig(progress=False, checkpoint_dir=str(tmp_path / "checkpoints")),
            tracking_uri=f"http://127.0.0.1:{port}",
        )
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "checkpoints").exists()


class BreakStore(Listener):
    """Overwrites the sqlite store with garbage at one step: a real store failing in the middle of a run."""

    def __init__(self, database, at_step: int) -> None:
        self.database = database
        self.at_step = at_step

    def on_step(self, step: int, loss: float) -> None:
        if step == self.at_step:
            self.database.write_bytes(b"not a database" * 1000)


def test_a_store_failing_mid_run_does_not_stop_training(synthetic_cache, tmp_path, capsys):
    database = tmp_path / "mlflow.db"
    tracker = MLflowTracker(f"sqlite:///{database}", "test")
    job = Job(
        cache=synthetic_cache,
        spec=spec_from_mapping({"strategy": "full"}),
        model="dlrm",
        config=TrainConfig(batch_size=512, progress=False, log_every=5),
        model_overrides={"bottom_mlp": (16,), "top_mlp": (16,)},
    )
    result = train(job, Broadcast([BreakStore(database, at_step=10), tracker]))
    assert result.metrics["test/auc"] > 0.6
    assert tracker.failures > 0 and tracker.pending
    assert "MLflow logging" in capsys.readouterr().err


def test_default_store_is_a_sqlite_file_here_and_the_environment_can_move_it(synthetic_cache, tmp_path, monkeypatch):
    spec = write_spec(tmp_path, 'strategy = "full"\n')
    config = TrainConfig(batch_size=2048, progress=False)
    small = {"bottom_mlp": (8,), "top_mlp": (8,)}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, run_id = train_and_track(synthetic_cache.path, spec, "dlrm", config, small, experiment="here")
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    _, run_id = train_and_track(synthetic_cache.path, spec, "dlrm", config, small, experiment="there")
    assert MlflowClient(f"sqlite:///{elsewhere}").get_run(run_id).info.status == "FINISHED"


def test_a_store_that_answers_reads_but_takes_no_writes_stops_before_training(tmp_path):
    """An immutable sqlite file (chattr +i: read-only even for root) already holding MLflow's tables."""
    import shutil
    import subprocess

    from recsys.tracking import connect

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    connect(uri, "readonly")  # the store exists and was writable
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(database)]).returncode != 0:
        pytest.skip("this file system cannot make a file immutable (chattr +i)")
    try:
        with pytest.raises(TrackingUnavailable, match="cannot use the MLflow tracking store"):
            connect(uri, "readonly")
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)


def test_experiments_made_before_the_kind_tag_are_marked_and_a_users_choice_is_kept(tmp_path):
    from recsys.tracking import connect

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    older = client.create_experiment("older")  # as MLflow makes one: no kind
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    connect(uri, "older")
    connect(uri, "chosen")
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"
