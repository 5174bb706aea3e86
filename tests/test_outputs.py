"""No command destroys what it did not create: outputs never overlap inputs, a user's files are never
replaced or removed, and a command killed at any moment leaves the complete old output or the new one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from recsys import outputs
from recsys.cli import main
from recsys.data.cache import PreparedCache
from recsys.export.artifact import export_model
from recsys.export.format import verified
from recsys.outputs import put_in_place, temporary_directory, temporary_file
from recsys.train.finished import finished_model_of_checkpoint


def test_a_file_is_replaced_whole_and_its_temporary_name_is_unique(tmp_path):
    target = tmp_path / "scores.parquet"
    target.write_text("old")
    first, second = temporary_file(target), temporary_file(target)
    assert first != second and first.parent == tmp_path and first.name.startswith(".scores.parquet.")
    first.write_text("new")
    put_in_place(first, target)
    assert target.read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([second.name, target.name])


@pytest.mark.parametrize("atomic", [True, False], ids=["exchange", "two-renames"])
def test_a_directory_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path, monkeypatch, atomic):
    if not atomic:
        monkeypatch.setattr(outputs, "exchange", lambda first, second: False)
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new = temporary_directory(target)
    (new / "new.txt").write_text("new")
    put_in_place(new, target)
    assert [path.name for path in target.iterdir()] == ["new.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_the_exchange_swaps_two_directories_atomically(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a").write_text("a")
    if not outputs.exchange(first, second):
        pytest.skip("this file system has no renameat2 exchange")
    assert (second / "a").exists() and not (first / "a").exists()


def test_an_output_that_is_inside_or_holds_an_input_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for output in (data, data / "out", tmp_path):
        with pytest.raises(ValueError, match="would overwrite"):
            outputs.check_apart(output, [data])
    outputs.check_apart(tmp_path / "elsewhere", [data])


@pytest.fixture(scope="module")
def head_file(synthetic_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("outputs_head") / "head.tsv"
    path.write_text("".join(synthetic_file.read_text().splitlines(keepends=True)[:2000]))
    return path


def test_export_refuses_a_directory_that_is_not_an_artifact(checkpoints, synthetic_cache, tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    for output in (user, checkpoints, checkpoints / "epoch-0001" / "model", synthetic_cache.path):
        assert main(["export", str(checkpoints), "-o", str(output)]) == 2
        error = capsys.readouterr().err
        assert "Traceback" not in error and ("not a recsys artifact" in error or "would overwrite" in error), error
    assert (user / "thesis.tex").read_text() == "years of work"
    assert (checkpoints / "epoch-0001" / "checksums.json").exists()


def test_export_replaces_an_artifact_but_not_one_holding_other_files(checkpoints, tmp_path, capsys):
    artifact = export_model(finished_model_of_checkpoint(checkpoints), tmp_path / "model")
    assert main(["export", str(checkpoints), "-o", str(artifact), "--quantize", "fp16"]) == 0
    assert verified(artifact)["precision"] == "fp16"
    (artifact / "notes.txt").write_text("mine")
    assert main(["export", str(checkpoints), "-o", str(artifact)]) == 2
    assert "not a recsys artifact (or holds other files too)" in capsys.readouterr().err
    assert (artifact / "notes.txt").read_text() == "mine"


def test_predict_refuses_to_write_over_its_inputs_or_a_file_that_is_not_parquet(
    checkpoints, head_file, tmp_path, capsys
):
    artifact = export_model(finished_model_of_checkpoint(checkpoints), tmp_path / "model")
    before = head_file.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for output in (head_file, artifact / "model.pt", notes):
        assert main(["predict", str(artifact), str(head_file), "-o", str(output), "--no-progress"]) == 2
        error = capsys.readouterr().err
        assert "Traceback" not in error and ("would overwrite" in error or "not a parquet file" in error), error
    assert head_file.read_bytes() == before and notes.read_text() == "mine"


def test_names_like_the_old_temporary_ones_are_a_users_and_left_alone(checkpoints, head_file, synthetic_file, tmp_path):
    scores, artifact, cache = tmp_path / "scores.parquet", tmp_path / "model", tmp_path / "cache"
    for name in ("scores.parquet.parts", "scores.parquet.partial", "model.partial", "cache.partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text(name)
    export_model(finished_model_of_checkpoint(checkpoints), artifact)
    assert main(["predict", str(artifact), str(head_file), "-o", str(scores), "--no-progress"]) == 0
    assert main(["data", "prepare", str(head_file), "-o", str(cache)]) == 0
    for name in ("scores.parquet.parts", "scores.parquet.partial", "model.partial", "cache.partial"):
        assert (tmp_path / name / "keep.txt").read_text() == name
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def killed_at_several_points(command: list[str], check, fractions=(0.5, 0.85, 0.97)) -> None:
    """Run `command` whole (timing it), then kill -9 it at fractions of that time; `check()` after every run."""
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - started
    check()
    for fraction in fractions:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(duration * fraction)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=60)
        check()


def recsys_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "recsys", *arguments]


def test_a_killed_export_leaves_the_old_artifact_or_the_new_one(checkpoints, tmp_path):
    artifact = export_model(finished_model_of_checkpoint(checkpoints), tmp_path / "model")

    def check() -> None:
        assert verified(artifact)["precision"] in ("fp32", "int8")

    command = recsys_command("export", str(checkpoints), "-o", str(artifact), "--quantize", "int8")
    killed_at_several_points(command, check)


def test_a_killed_predict_leaves_the_old_scores_or_the_new_ones(checkpoints, head_file, tmp_path):
    artifact = export_model(finished_model_of_checkpoint(checkpoints), tmp_path / "model")
    scores = tmp_path / "scores.parquet"
    pl.DataFrame({"score": [0.5]}).write_parquet(scores)

    def check() -> None:
        assert len(pl.read_parquet(scores)) in (1, 2000)

    command = recsys_command("predict", str(artifact), str(head_file), "-o", str(scores), "--no-progress")
    killed_at_several_points(command, check)


def test_a_killed_prepare_leaves_the_old_cache_or_the_new_one(synthetic_file, head_file, tmp_path):
    cache = tmp_path / "cache"
    assert main(["data", "prepare", str(head_file), "-o", str(cache)]) == 0

    def check() -> None:
        assert sum(PreparedCache.open(cache).meta["splits"].values()) in (2000, 40_000)

    command = recsys_command("data", "prepare", str(synthetic_file), "-o", str(cache), "--overwrite")
    killed_at_several_points(command, check)


def test_outputs_get_the_permissions_of_the_umask_not_private_ones(checkpoints, head_file, tmp_path):
    previous = os.umask(0o022)
    try:
        artifact = export_model(finished_model_of_checkpoint(checkpoints), tmp_path / "model")
        assert main(["predict", str(artifact), str(head_file), "-o", str(tmp_path / "s.parquet"), "--no-progress"]) == 0
        assert main(["data", "prepare", str(head_file), "-o", str(tmp_path / "cache")]) == 0
    finally:
        os.umask(previous)
    assert artifact.stat().st_mode & 0o777 == 0o755 and (tmp_path / "cache").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "s.parquet").stat().st_mode & 0o777 == 0o644


def test_only_what_is_wholly_of_the_commands_kind_is_replaced(checkpoints, head_file, tmp_path, capsys):
    fake = tmp_path / "fake"
    export_model(finished_model_of_checkpoint(checkpoints), fake)
    (fake / "model.pt").unlink()
    (fake / "model.pt").mkdir()  # a directory where the artifact has a file
    (fake / "model.pt" / "thesis.tex").write_text("mine")
    assert main(["export", str(checkpoints), "-o", str(fake)]) == 2
    assert (fake / "model.pt" / "thesis.tex").read_text() == "mine"
    cache = tmp_path / "cache"
    assert main(["data", "prepare", str(head_file), "-o", str(cache)]) == 0
    (cache / "notes.txt").write_text("mine")
    assert main(["data", "prepare", str(head_file), "-o", str(cache), "--overwrite"]) == 2
    assert "not a prepared cache (or holds other files too)" in capsys.readouterr().err
    assert (cache / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(checkpoints), "-o", str(empty)]) == 0 and verified(empty)


def test_a_killed_training_leaves_only_complete_verified_checkpoints(synthetic_cache, tmp_path):
    from recsys.train.checkpoint import epochs_in, verify_checkpoint

    spec = tmp_path / "full.toml"
    spec.write_text('strategy = "full"\n')
    directory = tmp_path / "checkpoints"
    command = recsys_command(
        "train", "--data", str(synthetic_cache.path), "--tables", str(spec), "--epochs", "3", "--batch-size", "4096",
        "--bottom-mlp", "16", "--top-mlp", "16", "--checkpoint-dir", str(directory), "--overwrite", "--no-tracking",
        "--no-progress", "--keep", "all",
    )  # fmt: skip

    def check() -> None:
        for path in epochs_in(directory).values():
            verify_checkpoint(path)

    killed_at_several_points(command, check)
