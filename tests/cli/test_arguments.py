"""Training settings from the command line: the dataclass's defaults, the options given, errors naming the option."""

from __future__ import annotations

import dataclasses

import pytest

from recsys.cli import main, parser
from recsys.cli.train import FLAGS, train_config
from recsys.train.config import TrainConfig

REQUIRED = ["train", "--data", "cache", "--tables", "spec.toml"]


@pytest.fixture(autouse=True)
def named_paths(tmp_path, monkeypatch):
    """The paths the command lines below name exist (they are checked before anything else)."""
    monkeypatch.chdir(tmp_path)
    for directory in ("cache", "model"):
        (tmp_path / directory).mkdir()
    for file in ("spec.toml", "in.tsv"):
        (tmp_path / file).write_text("")


def test_nothing_given_is_the_dataclass_defaults():
    assert train_config(parser().parse_args(REQUIRED)) == TrainConfig()


def test_the_options_given_fill_their_fields():
    given = ["--epochs", "3", "--dense-lr", "0.01", "--sparse-optimizer", "sgd", "--no-progress", "--keep", "all"]
    given += ["--checkpoint-dir", "runs/a", "--overwrite", "--rank-memory", "2GiB", "--patience", "2"]
    expected = TrainConfig(
        epochs=3,
        dense_learning_rate=0.01,
        sparse_optimizer="sgd",
        progress=False,
        keep="all",
        checkpoint_dir="runs/a",
        overwrite=True,
        rank_memory=2 * 2**30,
        patience=2,
    )
    assert train_config(parser().parse_args(REQUIRED + given)) == expected


def test_every_setting_but_the_evaluation_internals_has_an_option_and_help_quotes_its_default(capsys):
    parser()
    assert set(FLAGS) == {field.name for field in dataclasses.fields(TrainConfig)} - {"eval_batch_size", "log_every"}
    try:
        parser().parse_args(["train", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "rows per training step (default 4096)" in text and "(default best,last)" in text


def test_a_bad_setting_is_one_line_naming_the_option(capsys):
    assert main([*REQUIRED, "--epochs", "0", "--no-tracking"]) == 2
    assert capsys.readouterr().err == "recsys train: error: --epochs must be positive, got 0\n"
    assert main([*REQUIRED, "--resume", "--no-tracking"]) == 2
    assert "--resume needs a checkpoint directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "culprit"),
    [
        (["serve", "model", "--port", "99999"], "--port"),
        (["serve", "model", "--port", "0"], "--port"),
        (["serve", "model", "--max-rows", "0"], "--max-rows"),
        (["serve", "model", "--max-body-mb", "-1"], "--max-body-mb"),
        (["serve", "model", "--threads", "0"], "--threads"),
        (["predict", "model", "in.tsv", "-o", "s.parquet", "--batch-rows", "0"], "--batch-rows"),
        (["data", "prepare", "in.tsv", "-o", "cache", "--split", "nan,0,0"], "--split"),
        (["data", "prepare", "in.tsv", "-o", "cache", "--split", "0.5,0.2,0.2"], "--split"),
        (["data", "prepare", "in.tsv", "-o", "cache", "--split", "0,0.5,0.5"], "--split"),
        (["data", "prepare", "in.tsv", "-o", "cache", "--block-mb", "0"], "--block-mb"),
        (["data", "synth", "-o", "x.tsv", "--rows", "-5"], "--rows"),
    ],
)
def test_bad_options_stop_before_any_work_with_exit_2_naming_the_option(command, culprit, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(command)
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and f"argument {culprit}" in error and "Traceback" not in error
