"""The `recsys` command as a user runs it: a fresh process, its output and exit status."""

from __future__ import annotations

import subprocess
import sys

import pytest


def recsys(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys", *arguments], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("command", [[], ["data"], ["train"]])
def test_help_explains_every_command(command):
    result = recsys(*command, "--help")
    assert result.returncode == 0
    assert "usage: recsys" in result.stdout
    if command == ["train"]:
        assert "--tables" in result.stdout and "fused row-wise Adagrad" in result.stdout


def test_synth_prepare_train_from_the_command_line(tmp_path):
    raw, cache = tmp_path / "raw.tsv.gz", tmp_path / "cache"
    assert recsys("data", "synth", "-o", str(raw), "--rows", "6000", "--cardinality-scale", "0.001").returncode == 0
    prepared = recsys("data", "prepare", str(raw), "-o", str(cache))
    assert prepared.returncode == 0, prepared.stderr
    assert "train 4,800, val 600, test 600" in prepared.stdout
    spec = tmp_path / "full.toml"
    spec.write_text('strategy = "full"\n')
    trained = recsys(
        "train",
        "--data",
        str(cache),
        "--tables",
        str(spec),
        "--batch-size",
        "256",
        "--bottom-mlp",
        "16",
        "--top-mlp",
        "16",
        "--no-progress",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert "test/auc" in trained.stdout and "MLflow run" in trained.stdout
    assert "is_fx_tracing" not in trained.stderr and "WARNING" not in trained.stderr


def test_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\t2\n")
    result = recsys("data", "prepare", str(bad), "-o", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert f"{bad}:1: expected 40 tab-separated fields, found 2" in result.stderr
    assert "Traceback" not in result.stderr
    spec = tmp_path / "typo.toml"
    spec.write_text('strategy = "hashing"\nrowz = 5\n')
    result = recsys("train", "--data", str(tmp_path), "--tables", str(spec), "--no-tracking")
    assert result.returncode == 2
    assert "unknown key 'rowz'" in result.stderr and str(spec) in result.stderr


def test_nproc_trains_over_two_processes_and_only_rank_0_tracks(synthetic_cache, tmp_path):
    import os
    import signal

    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = tmp_path / "hashing.toml"
    spec.write_text('strategy = "hashing"\ncompression = 10\nsharding = { C1 = "data_parallel" }\n')
    command = [sys.executable, "-m", "recsys", "train", "--nproc", "2", "--data", str(synthetic_cache.path)]
    command += ["--tables", str(spec), "--sharding", "row_wise", "--batch-size", "2048", "--no-progress"]
    command += ["--tracking-uri", store, "--experiment", "two-ranks"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        output, errors = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, errors[-4000:]
    assert "hashing_C1: data_parallel on ranks [0, 1]" in errors
    assert "hashing_C2: row_wise on ranks [0, 1]" in errors
    assert output.count("test/auc") == 1  # rank 0 prints the results, once
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("two-ranks").experiment_id])
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["sharding/rank_0_bytes"] > 0 and metrics["sharding/rank_1_bytes"] > 0
    plan = client.download_artifacts(runs[0].info.run_id, "sharding_plan.txt", str(tmp_path))
    assert "row_wise" in open(plan).read()


def test_sizes_and_nproc_arguments(tmp_path):
    from recsys.cli.arguments import byte_size
    from recsys.cli.train import without_nproc

    (tmp_path / "x").mkdir()
    (tmp_path / "y").write_text("")
    assert byte_size("2GiB") == 2 * 2**30 and byte_size("500MB") == 500 * 10**6 and byte_size("1.5e6") == 1_500_000
    assert without_nproc(["train", "--nproc", "2", "--data", "x", "--nproc=3"]) == ["train", "--data", "x"]
    for size in ("lots", "inf"):
        refused = recsys("train", "--data", "x", "--tables", "y", "--rank-memory", size, cwd=tmp_path)
        assert refused.returncode == 2 and "argument --rank-memory" in refused.stderr
    abbreviated = recsys("train", "--data", "x", "--tables", "y", "--npr", "2", cwd=tmp_path)
    assert abbreviated.returncode == 2 and "unrecognized arguments: --npr" in abbreviated.stderr


def test_a_run_without_test_rows_says_so_and_records_it(synthetic_file, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from recsys.cli import main

    raw = tmp_path / "raw.tsv"
    raw.write_text("".join(synthetic_file.read_text().splitlines(keepends=True)[:2000]))
    assert main(["data", "prepare", str(raw), "-o", str(tmp_path / "cache"), "--split", "1800,200,0"]) == 0
    spec = tmp_path / "full.toml"
    spec.write_text('strategy = "full"\n')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["train", "--data", str(tmp_path / "cache"), "--tables", str(spec), "--epochs", "1", "--no-progress"]
    assert main([*command, "--bottom-mlp", "8", "--top-mlp", "8", "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "no test metrics: the prepared data has no test rows" in printed and "test/auc" not in printed
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])[0]
    assert run.data.metrics["test/rows"] == 0 and "test/auc" not in run.data.metrics


def test_train_summary_mlflow_and_export_state_one_size(synthetic_cache, tmp_path, capsys):
    import re

    from mlflow.tracking import MlflowClient

    from recsys.cli import main

    spec = tmp_path / "hashing.toml"
    spec.write_text('strategy = "hashing"\ncompression = 10\n')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["train", "--data", str(synthetic_cache.path), "--tables", str(spec), "--epochs", "1", "--no-progress"]
    command += ["--bottom-mlp", "8", "--top-mlp", "8", "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(command) == 0
    sizes = r"([\d,]+) bytes \(parameters ([\d,]+) \+ index ([\d,]+)\)"
    trained = re.search(f"size: {sizes}", capsys.readouterr().out)
    assert main(["export", str(tmp_path / "ck"), "-o", str(tmp_path / "model")]) == 0
    exported = re.search(rf"size \(fp32\): {sizes}", capsys.readouterr().out)
    total, parameters, index = (int(value.replace(",", "")) for value in trained.groups())
    assert exported.groups() == trained.groups() and total == parameters + index
    client = MlflowClient(uri)
    metrics = client.search_runs([client.get_experiment_by_name("recsys").experiment_id])[0].data.metrics
    assert (metrics["table/total_bytes"], metrics["table/param_bytes"], metrics["table/index_bytes"]) == (
        total,
        parameters,
        index,
    )
