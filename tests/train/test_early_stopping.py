"""Early stopping on validation AUC: when it stops, and that the test sees the best epoch's weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from recsys.tables import spec_from_mapping
from recsys.train.best import EarlyStopping
from recsys.train.config import TrainConfig
from recsys.train.events import Listener
from recsys.train.job import Job
from recsys.train.loop import Trainer, train
from tests.models.test_zoo import SMALL


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best():
    model = nn.Linear(3, 1)
    stopping = EarlyStopping(patience=2)
    weights = {}
    for epoch, auc in enumerate([0.60, 0.70, 0.69, 0.71, 0.705, 0.70], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        weights[epoch] = model.weight.clone()
        if stopping.update(epoch, auc, model):
            break
    assert (epoch, stopping.best_epoch) == (6, 4)
    assert stopping.restore_best(model, last_epoch=6, checkpoint_dir=None)
    torch.testing.assert_close(model.weight, weights[4])
    assert not EarlyStopping(patience=None).update(1, 0.5, model)


def bag_job(cache, **config) -> Job:
    settings = {"batch_size": 128, "progress": False, "sparse_learning_rate": 0.5, **config}
    tables = spec_from_mapping({"strategy": "full", "embedding_dim": 8})
    return Job(cache, tables, "deepfm", TrainConfig(**settings), model_overrides=SMALL["deepfm"])


@pytest.fixture(scope="module")
def stopped(bag_cache):
    return train(bag_job(bag_cache, epochs=12, patience=1))


def test_an_overfitting_run_stops_early_and_tests_the_best_epoch(bag_cache, stopped):
    metrics = stopped.metrics
    assert metrics["stopped_epoch"] < 12 and metrics["best_epoch"] == metrics["stopped_epoch"] - 1
    straight = train(bag_job(bag_cache, epochs=int(metrics["best_epoch"])))
    for key in ("val/auc", "val/logloss", "test/auc", "test/logloss"):
        assert metrics[key] == pytest.approx(straight.metrics[key], abs=1e-6), key


def test_a_resumed_run_restores_a_best_epoch_from_before_the_restart(bag_cache, stopped, tmp_path):
    best = int(stopped.metrics["best_epoch"])
    job = bag_job(bag_cache, epochs=best, patience=1, checkpoint_dir=str(tmp_path))
    train(job)
    resumed = train(dataclasses.replace(job, config=dataclasses.replace(job.config, epochs=12, resume=True)))
    assert resumed.metrics["stopped_epoch"] == best + 1
    assert resumed.metrics["test/auc"] == pytest.approx(stopped.metrics["test/auc"], abs=1e-6)


class Rates(Listener):
    """Records the learning rates of every parameter group after each epoch's metrics."""

    def __init__(self) -> None:
        self.factors: list[float] = []

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "learning_rate_factor" in metrics:
            self.factors.append(metrics["learning_rate_factor"])


@pytest.mark.parametrize(("lr_decay", "factor"), [(0.5, 0.5), (None, 0.1)])
def test_learning_rates_decay_after_each_epoch_without_improvement(bag_cache, monkeypatch, lr_decay, factor):
    """--lr-decay F multiplies every rate by F on a plateau; under --patience the default is FuxiCTR's 0.1."""
    seen = []
    original = Trainer.decay_learning_rates

    def recording(trainer):
        before = [group["lr"] for group in trainer.optimizer.param_groups]
        found = original(trainer)
        seen.append([after / first for first, after in zip(before, [g["lr"] for g in trainer.optimizer.param_groups])])
        return found

    monkeypatch.setattr(Trainer, "decay_learning_rates", recording)
    rates = Rates()
    train(bag_job(bag_cache, epochs=12, patience=2, lr_decay=lr_decay), rates)
    expected = [factor**count for count in range(1, len(rates.factors) + 1)]
    assert rates.factors and rates.factors == pytest.approx(expected)
    assert all(ratio == pytest.approx(factor) for ratios in seen for ratio in ratios) and len(seen[0]) >= 2


def test_the_plateau_factor_is_recorded_and_one_keeps_rates_constant():
    assert TrainConfig(patience=2).to_dict()["lr_decay"] == 0.1
    assert TrainConfig().to_dict()["lr_decay"] == 1.0  # no early stopping: constant unless asked
    assert TrainConfig(lr_decay=0.5).to_dict()["lr_decay"] == 0.5
    assert TrainConfig(patience=2, lr_decay=1.0).plateau_factor == 1.0
    for wrong in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="lr_decay"):
            TrainConfig(lr_decay=wrong)


def test_gradients_are_clipped_to_the_norm_before_the_dense_step(bag_cache, monkeypatch):
    """With clip_norm the dense gradients the optimizer steps on have that total norm (they were larger)."""
    norms = {}
    original = Trainer.train_step

    def recording(trainer, batch):
        loss = original(trainer, batch)
        grads = [p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]
        norms.setdefault(trainer.config.clip_norm, []).append(float(torch.cat(grads).norm()))
        return loss

    monkeypatch.setattr(Trainer, "train_step", recording)
    train(bag_job(bag_cache, epochs=1))
    train(bag_job(bag_cache, epochs=1, clip_norm=0.01))
    assert min(norms[None]) > 0.01  # unclipped gradients are larger than the bound
    assert norms[0.01] == pytest.approx([0.01] * len(norms[0.01]), rel=1e-4)
