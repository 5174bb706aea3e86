"""A sweep against a real `mlflow server` on 127.0.0.1 over HTTP (sqlite backend in a temporary
directory), read back with the MLflow client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from recsys.sweep.runner import run_sweep
from tests.mlflow_server import running_mlflow_server


@pytest.fixture
def mlflow_server(tmp_path) -> Iterator[str]:
    with running_mlflow_server(tmp_path) as url:
        yield url


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
