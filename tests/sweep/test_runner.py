"""A sweep against a real MLflow store: parent and child runs, skipping what finished, recording
what failed, and the report's tables and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from recsys.sweep.report import run_report
from recsys.sweep.runner import ERROR_TAG, HASH_TAG, PARENT_TAG, run_sweep


def experiment_file(tmp_path, cache_path, strategies='["full", "hashing", "mixed_dim"]'):
    path = tmp_path / "small.toml"
    path.write_text(
        f"""
name = "small"
[data]
prepared = "{cache_path}"
[grid]
models = ["dlrm", "lr"]
strategies = {strategies}
compressions = [100]
seeds = [0, 1]
[train]
batch_size = 2048
[models.dlrm]
bottom_mlp = [16]
top_mlp = [16]
"""
    )
    return path


def test_sweep_records_every_configuration_and_skips_finished_ones(synthetic_cache, tmp_path, capsys):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = experiment_file(tmp_path, synthetic_cache.path)
    first = run_sweep(path, store, tmp_path / "cache")
    assert capsys.readouterr().out.count("finished model ") == 8
    # mixed_dim cannot reach 100x on this small vocabulary: it fails, recorded, and the sweep goes on
    models, seeds = ("dlrm", "lr"), (0, 1)
    expected = [f"{model}/{kind}/seed{seed}" for model in models for kind in ("full", "hashing-100x") for seed in seeds]
    assert sorted(first.done) == sorted(expected)
    assert sorted(first.failed) == [f"{model}/mixed_dim-100x/seed{seed}" for model in models for seed in seeds]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("small")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get(PARENT_TAG) == "true"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == first.parent_run_id]
    assert len(parents) == 1 and len(children) == 12
    failed = [run for run in children if run.info.status == "FAILED"]
    assert len(failed) == 4 and all("mixed_dim needs at least" in run.data.tags[ERROR_TAG] for run in failed)
    assert all(run.data.tags[HASH_TAG] for run in children)
    recorded = {run.data.tags["configuration"]: run.data.metrics for run in children if run.info.status == "FINISHED"}
    for result in first.results:  # what the sweep printed is what MLflow holds
        budget = "" if result.budget == "full" else f"-{result.budget}"
        metrics = recorded[f"{result.model}/{result.strategy}{budget}/seed{result.seed}"]
        assert (result.test_auc, result.val_auc) == (metrics["test/auc"], metrics["val/auc"])
        assert result.total_bytes == metrics["table/total_bytes"]
    interrupted = client.create_run(
        experiment.experiment_id, tags={"mlflow.parentRunId": first.parent_run_id, HASH_TAG: "gone"}
    ).info.run_id  # as a sweep killed mid-run leaves its child
    second = run_sweep(path, store, tmp_path / "cache")
    assert client.get_run(interrupted).info.status == "KILLED"
    assert second.parent_run_id == first.parent_run_id
    assert sorted(second.skipped) == sorted(first.done) and not second.done
    assert sorted(second.failed) == sorted(first.failed)  # failures are tried again

    directory = run_report("small", store, tmp_path / "results")
    rows = list(csv.DictReader((directory / "results.csv").open()))
    assert {(row["model"], row["strategy"], row["budget"]) for row in rows} == {
        (model, strategy, budget) for model in models for strategy, budget in (("full", "full"), ("hashing", "100x"))
    }
    finished = [run for run in children if run.info.status == "FINISHED"]
    dlrm_full = [
        run.data.metrics["test/auc"] for run in finished if run.data.tags["configuration"].startswith("dlrm/full")
    ]
    row = next(row for row in rows if row["model"] == "dlrm" and row["strategy"] == "full")
    assert float(row["auc_mean"]) == sum(dlrm_full) / 2 and row["seeds"] == "2"
    assert (directory / "pareto_dlrm.png").stat().st_size > 10_000 and (directory / "results.md").exists()
    artifacts = {item.path for item in client.list_artifacts(first.parent_run_id, "report")}
    assert {"report/results.csv", "report/results.md", "report/pareto_dlrm.png", "report/pareto_lr.png"} <= artifacts
    logged = client.download_artifacts(first.parent_run_id, "report/results_table.json", str(tmp_path))
    table = json.loads(Path(logged).read_text())
    assert table["columns"][:3] == ["model", "strategy", "budget"] and len(table["data"]) == len(rows)


def test_each_configuration_checkpoints_in_a_directory_of_its_own(synthetic_cache, tmp_path):
    import json

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "checkpointed.toml"
    path.write_text(
        f"""
name = "checkpointed"
[data]
prepared = "{synthetic_cache.path}"
[grid]
models = ["lr"]
strategies = ["full", "hashing"]
compressions = [10]
seeds = [0]
[train]
batch_size = 4096
checkpoint_dir = "{tmp_path / "checkpoints"}"
"""
    )
    outcome = run_sweep(path, store, tmp_path / "cache")
    assert len(outcome.done) == 2
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("checkpointed").experiment_id
    children = [run for run in client.search_runs([experiment]) if run.data.tags.get(HASH_TAG)]
    strategies = {}
    for run in children:
        directory = tmp_path / "checkpoints" / run.data.tags[HASH_TAG]
        assert run.data.tags["recsys.checkpoint"] == str(directory / "epoch-0001")
        strategies[run.data.tags["strategy"]] = json.loads((directory / "epoch-0001" / "progress.json").read_text())
    assert {name: progress["job"]["tables"]["strategy"] for name, progress in strategies.items()} == {
        "full": "full",
        "hashing": "hashing",
    }


def test_the_closing_table_is_aligned_and_ranks_each_model_by_test_auc():
    from recsys.sweep.summary import ConfigurationResult, results_table

    def result(model: str, strategy: str, test_auc: float) -> ConfigurationResult:
        return ConfigurationResult(model, strategy, "10x", 0, 3, 0.75, test_auc, 12345.6, 1_234_567)

    table = results_table([result("lr", "qr", 0.7), result("dlrm", "qr", 0.71), result("dlrm", "hashing", 0.72),
                           result("dlrm", "robe", float("nan"))]).splitlines()  # fmt: skip
    assert table[0].split() == ["model", "strategy", "budget", "seed", "best", "epoch", "val", "AUC", "test", "AUC",
                                "samples/s", "bytes"]  # fmt: skip
    order = [line.split()[:2] for line in table[1:]]
    assert order == [["dlrm", "hashing"], ["dlrm", "qr"], ["dlrm", "robe"], ["lr", "qr"]]
    assert table[1].split()[-4:] == ["0.7500", "0.7200", "12,346", "1,234,567"] and "no test rows" in table[3]
    assert len({len(line) for line in table[:3]}) == 1  # right-aligned numbers end in one column


def test_one_train_command_reproduces_a_sweep_cell_exactly(synthetic_cache, tmp_path, capsys):
    from recsys.cli import main

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "cell.toml"
    path.write_text(
        f"""
name = "cell"
[data]
prepared = "{synthetic_cache.path}"
[grid]
models = ["deepfm"]
strategies = ["hashing"]
compressions = [10]
seeds = [1]
[train]
epochs = 1
batch_size = 1024
[tables]
init_std = 0.02
[models.deepfm]
hidden = [16]
dropout = 0.1
"""
    )
    swept = run_sweep(path, store, tmp_path / "cache")
    spec = tmp_path / "hashing.toml"
    spec.write_text('strategy = "hashing"\ncompression = 10\n')
    command = ["train", "--data", str(synthetic_cache.path), "--tables", str(spec), "--model", "deepfm"]
    command += ["--seed", "1", "--epochs", "1", "--batch-size", "1024", "--no-progress", "--tracking-uri", store]
    command += ["--set", "tables.init_std=0.02", "--set", "model.hidden=[16]", "--set", "models.deepfm.dropout=0.1"]
    assert main([*command, "--experiment", "by-hand"]) == 0
    capsys.readouterr()
    client = MlflowClient(store)
    cell = client.search_runs([client.get_experiment_by_name("cell").experiment_id])
    cell = next(run for run in cell if run.data.tags.get("mlflow.parentRunId") == swept.parent_run_id)
    by_hand = client.search_runs([client.get_experiment_by_name("by-hand").experiment_id])[0]
    for name in ("val/auc", "test/auc", "test/logloss", "table/total_bytes"):
        assert by_hand.data.metrics[name] == cell.data.metrics[name], name


def test_a_rerun_supersedes_a_killed_attempt_visibly(synthetic_cache, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = tmp_path / "rerun.toml"
    path.write_text(
        f"""
name = "rerun"
[data]
prepared = "{synthetic_cache.path}"
[grid]
models = ["lr"]
strategies = ["full"]
seeds = [0]
[train]
batch_size = 4096
"""
    )
    first = run_sweep(path, store, tmp_path / "cache")
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("rerun").experiment_id
    (attempt,) = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{first.parent_run_id}'")
    client.set_terminated(attempt.info.run_id, status="KILLED")  # as if the sweep had been stopped in it
    run_sweep(path, store, tmp_path / "cache")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{first.parent_run_id}'")
    rerun = next(run for run in children if run.info.run_id != attempt.info.run_id)
    killed = client.get_run(attempt.info.run_id)
    assert killed.info.run_name == "lr/full/seed0 (superseded)" and rerun.info.run_name == "lr/full/seed0"
    assert killed.data.tags["recsys.superseded_by"] == rerun.info.run_id
    assert rerun.data.tags["recsys.supersedes"] == attempt.info.run_id and rerun.info.status == "FINISHED"
    assert (rerun.data.tags["strategy"], rerun.data.tags["budget"], rerun.data.tags["model"]) == ("full", "full", "lr")
    parent = client.get_run(first.parent_run_id)
    assert parent.data.tags["dataset"] == "criteo" and len(parent.inputs.dataset_inputs) == 3
    assert parent.data.metrics["sweep/best_test_auc"] == rerun.data.metrics["test/auc"]


def test_the_parent_summary_is_the_best_auc_and_the_smallest_run_near_it():
    from recsys.sweep.runner import parent_summary

    children = [
        {"test/auc": 0.800, "table/total_bytes": 1000.0, "table/compression": 1.0},
        {"test/auc": 0.7995, "table/total_bytes": 100.0, "table/compression": 10.0},  # within 0.001: smaller
        {"test/auc": 0.7985, "table/total_bytes": 10.0, "table/compression": 100.0},  # 0.0015 below: too far
        {"val/auc": 0.9},  # failed before testing: not counted among the scored
    ]
    assert parent_summary(children) == {
        "sweep/finished_runs": 4.0,
        "sweep/best_test_auc": 0.800,
        "sweep/smallest_bytes_near_best": 100.0,
        "sweep/smallest_near_best_test_auc": 0.7995,
        "sweep/smallest_near_best_compression": 10.0,
    }
    assert parent_summary([]) == {"sweep/finished_runs": 0.0}
