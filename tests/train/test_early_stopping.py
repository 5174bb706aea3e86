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


def test_learning_rates_decay_after_each_epoch_without_improvement(bag_cache, monkeypatch):
    seen = []
    original = Trainer.decay_learning_rates

    def recording(trainer):
        before = [group["lr"] for group in trainer.optimizer.param_groups]
        found = original(trainer)
        seen.append([after / first for first, after in zip(before, [g["lr"] for g in trainer.optimizer.param_groups])])
        return found

    monkeypatch.setattr(Trainer, "decay_learning_rates", recording)
    rates = Rates()
    result = train(bag_job(bag_cache, epochs=12, patience=2, lr_decay=0.5), rates)
    assert rates.factors and rates.factors == [0.5**count for count in range(1, len(rates.factors) + 1)]
    assert all(ratio == pytest.approx(0.5) for ratios in seen for ratio in ratios) and len(seen[0]) >= 2
    assert result.metrics["stopped_epoch"] <= 12
