"""Checkpoints: one run per directory, best and last kept, verified by checksums, exported at the best epoch."""

from __future__ import annotations

import json

import pytest
import torch

from recsys.checksums import ChecksumError
from recsys.cli import main
from recsys.export.artifact import export_model
from recsys.train.checkpoint import CHECKSUM_FILE, PROGRESS_FILE, latest_checkpoint
from recsys.train.finished import finished_model_of_checkpoint
from recsys.train.loop import train
from tests.train.conftest import with_config
from tests.train.test_early_stopping import bag_job


def epochs(directory) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("epoch-"))


def state(artifact) -> dict[str, torch.Tensor]:
    return torch.load(artifact / "model.pt", weights_only=True)


def assert_same_state(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=0, rtol=0, msg=key)


@pytest.fixture(scope="module")
def stopped_early(bag_cache, tmp_path_factory):
    """A tracked run that stops early (its last epoch is not its best), every epoch kept: (directory, run id, uri)."""
    from recsys.tracking import MLflowTracker

    root = tmp_path_factory.mktemp("stopped_early")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = MLflowTracker(uri, "best-epoch")
    job = bag_job(bag_cache, epochs=12, patience=2, lr_decay=1.0, checkpoint_dir=str(root / "checkpoints"), keep="all")
    result = train(job, tracker)
    best, stopped = int(result.metrics["best_epoch"]), int(result.metrics["stopped_epoch"])
    assert stopped == best + 2 <= 12, "the planted data must overfit, so that the last epoch is not the best"
    return root / "checkpoints", tracker.run_id, uri, best, stopped


def test_export_takes_the_best_epoch_by_directory_and_by_run_id(stopped_early, tmp_path):
    directory, run_id, uri, best, stopped = stopped_early
    assert epochs(directory) == [f"epoch-{epoch:04d}" for epoch in range(1, stopped + 1)]
    by_directory = export_model(finished_model_of_checkpoint(directory), tmp_path / "by_directory")
    assert main(["export", run_id, "-o", str(tmp_path / "by_run"), "--tracking-uri", uri, "--no-mlflow-model"]) == 0
    of_best = export_model(finished_model_of_checkpoint(directory / f"epoch-{best:04d}"), tmp_path / "of_best")
    of_last = export_model(finished_model_of_checkpoint(directory / f"epoch-{stopped:04d}"), tmp_path / "of_last")
    for artifact in (by_directory, tmp_path / "by_run"):
        manifest = json.loads((artifact / "manifest.json").read_text())
        assert manifest["source"]["epoch"] == best
        assert manifest["source"]["checkpoint"].endswith(f"epoch-{best:04d}")
        assert_same_state(state(artifact), state(of_best))
    last = state(of_last)
    assert any(not torch.equal(value, last[key]) for key, value in state(of_best).items())


def test_only_the_best_and_last_epochs_are_kept_by_default(bag_cache, tmp_path):
    result = train(bag_job(bag_cache, epochs=12, patience=2, lr_decay=1.0, checkpoint_dir=str(tmp_path)))
    best, stopped = int(result.metrics["best_epoch"]), int(result.metrics["stopped_epoch"])
    assert epochs(tmp_path) == [f"epoch-{best:04d}", f"epoch-{stopped:04d}"]
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".partial")]


def test_a_directory_of_another_run_is_refused_unless_resumed_or_overwritten(make_job, tmp_path, capsys):
    job = make_job(epochs=2, checkpoint_dir=str(tmp_path), keep="all")
    train(job)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds another run's checkpoints .*epoch-0001.*--resume.*--overwrite"):
        train(with_config(job, epochs=1))
    with pytest.raises(ValueError, match="choose one"):
        with_config(job, resume=True, overwrite=True)
    train(with_config(job, epochs=1, seed=7, overwrite=True))  # epoch 2 of the other run must not survive
    assert epochs(tmp_path) == ["epoch-0001"] and (tmp_path / "notes.txt").read_text() == "mine"
    recorded = json.loads((tmp_path / "epoch-0001" / PROGRESS_FILE).read_text())
    assert recorded["job"]["train"]["seed"] == 7


def test_the_data_path_is_recorded_absolute_and_exports_from_anywhere(synthetic_cache, tmp_path, monkeypatch):
    from recsys.data.cache import PreparedCache
    from recsys.tables import spec_from_mapping
    from recsys.train.config import TrainConfig
    from recsys.train.job import Job
    from tests.train.conftest import SMALL_MODEL

    monkeypatch.chdir(synthetic_cache.path.parent)
    relative = PreparedCache.open(synthetic_cache.path.name)
    config = TrainConfig(epochs=1, batch_size=4096, progress=False, checkpoint_dir=str(tmp_path / "checkpoints"))
    train(Job(relative, spec_from_mapping({"strategy": "full"}), "dlrm", config, dict(SMALL_MODEL)))
    recorded = json.loads((latest_checkpoint(tmp_path / "checkpoints") / PROGRESS_FILE).read_text())
    assert recorded["job"]["data"]["path"] == str(synthetic_cache.path.resolve())
    monkeypatch.chdir(tmp_path)
    artifact = export_model(finished_model_of_checkpoint(tmp_path / "checkpoints"), tmp_path / "model")
    assert (artifact / "manifest.json").exists()


@pytest.fixture
def checkpointed(make_job, tmp_path):
    job = make_job(epochs=1, batch_size=4096, checkpoint_dir=str(tmp_path / "checkpoints"))
    train(job)
    return job, tmp_path / "checkpoints" / "epoch-0001"


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def shard_file(checkpoint):
    return next(path for path in checkpoint.iterdir() if path.suffix == ".distcp")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda checkpoint: flip_a_byte(shard_file(checkpoint)), "checksum mismatch"),
        (lambda checkpoint: shard_file(checkpoint).write_bytes(shard_file(checkpoint).read_bytes()[:100]), "mismatch"),
        (lambda checkpoint: shard_file(checkpoint).unlink(), "is missing"),
        (lambda checkpoint: (checkpoint / "extra.bin").write_bytes(b"x"), "not in the file list"),
        (lambda checkpoint: (checkpoint / CHECKSUM_FILE).unlink(), "checksums.json is missing"),
        (lambda checkpoint: flip_a_byte(checkpoint / PROGRESS_FILE), "progress.json: checksum mismatch"),
    ],
    ids=["flipped", "truncated", "missing", "added", "no-list", "progress"],
)
def test_a_damaged_checkpoint_is_refused_by_resume_and_export(checkpointed, tmp_path, damage, message, capsys):
    job, checkpoint = checkpointed
    damage(checkpoint)
    with pytest.raises(ChecksumError, match=message):
        train(with_config(job, epochs=2, resume=True))
    assert main(["export", str(checkpoint.parent), "-o", str(tmp_path / "model")]) == 2
    error = capsys.readouterr().err
    assert message.split(":")[0] in error and "Traceback" not in error and not (tmp_path / "model").exists()


def test_a_checkpoint_is_verified_when_early_stopping_restores_it(make_job, tmp_path):
    job = make_job(epochs=1, batch_size=4096, patience=1, checkpoint_dir=str(tmp_path))
    train(job)
    flip_a_byte(shard_file(tmp_path / "epoch-0001"))
    from recsys.train.best import EarlyStopping

    stopping = EarlyStopping(patience=1, best_auc=0.9, best_epoch=1)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        stopping.restore_best(torch.nn.Linear(1, 1), last_epoch=3, checkpoint_dir=str(tmp_path))


def test_a_run_whose_directory_another_training_took_over_is_not_exported(make_job, tmp_path, capsys):
    from recsys.tracking import MLflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, "taken-over")
    job = make_job(epochs=1, batch_size=4096, checkpoint_dir=str(tmp_path / "checkpoints"))
    train(job, tracker)
    train(with_config(job, seed=5, overwrite=True))  # another training writes into the same directory
    command = ["export", tracker.run_id, "-o", str(tmp_path / "model"), "--tracking-uri", uri, "--no-mlflow-model"]
    assert main(command) == 2
    assert "was written by another training than the run's" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_a_checkpoint_of_data_prepared_again_is_not_exported(synthetic_file, tmp_path, capsys):
    from recsys.data.prepare import PrepareOptions, prepare
    from recsys.tables import spec_from_mapping
    from recsys.train.config import TrainConfig
    from recsys.train.job import Job
    from tests.train.conftest import SMALL_MODEL

    cache = prepare([synthetic_file], tmp_path / "cache", PrepareOptions())
    config = TrainConfig(epochs=1, batch_size=4096, progress=False, checkpoint_dir=str(tmp_path / "checkpoints"))
    train(Job(cache, spec_from_mapping({"strategy": "full"}), "dlrm", config, dict(SMALL_MODEL)))
    prepare([synthetic_file], tmp_path / "cache", PrepareOptions(split=(0.7, 0.2, 0.1), overwrite=True))
    assert main(["export", str(tmp_path / "checkpoints"), "-o", str(tmp_path / "model")]) == 2
    assert "was prepared again since it was trained" in capsys.readouterr().err
