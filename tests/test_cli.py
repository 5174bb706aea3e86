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
