"""Training a pruned table: the schedule runs inside the loop, and the compact serving form
predicts what the trained (sharded) model predicts."""

from __future__ import annotations

import shutil

import pytest
import torch
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection

from recsys.data.loader import BatchLoader
from recsys.tables.pruned import CompactPrunedLookup
from recsys.train.events import Listener
from recsys.train.loop import train

PRUNED = {"strategy": "pruned", "compression": 20, "prune_start": 0.2, "prune_end": 0.6, "updates": 4}


class MetricLog(Listener):
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))


def test_pruning_follows_the_schedule_during_training(make_job):
    job = make_job(PRUNED, epochs=2, batch_size=256)
    log = MetricLog()
    result = train(job, log)
    kept = [(step, metrics["pruning/kept_ids"]) for step, metrics in log.metrics if "pruning/kept_ids" in metrics]
    steps = len(BatchLoader(job.cache, "train", 256)) * 2
    assert len(kept) == 4
    assert [count for _, count in kept] == sorted((count for _, count in kept), reverse=True)
    assert 0.2 * steps <= kept[0][0] and kept[-1][0] <= 0.6 * steps + 1
    lookup = result.model.module.lookup
    assert kept[-1][1] == lookup.target == lookup.kept_ids()
    assert result.metrics["compact/table/total_bytes"] <= result.memory.full_bytes / 20


def test_the_serving_form_is_unsharded_and_predicts_what_training_predicts(make_job):
    result = train(make_job(PRUNED, epochs=1))
    serving = result.serving
    assert isinstance(serving.lookup, CompactPrunedLookup)
    assert not any(isinstance(module, ShardedEmbeddingBagCollection) for module in serving.modules())
    batch = next(iter(BatchLoader(make_job().cache, "test", 1000)))
    result.model.eval()
    with torch.no_grad():
        expected = result.model(batch.dense, batch.sparse)
        torch.testing.assert_close(serving(batch.dense, batch.sparse), expected, rtol=0, atol=1e-5)
    assert result.metrics["compact/test/auc"] == pytest.approx(result.metrics["test/auc"], abs=1e-6)


def test_resume_restores_the_pruning_mask(make_job, tmp_path):
    """A run that stopped after its first epoch resumes onto the same schedule (same `epochs`)."""
    checkpoints = tmp_path / "checkpoints"
    straight = train(make_job(PRUNED, epochs=2, checkpoint_dir=str(checkpoints), keep="all"))
    shutil.rmtree(checkpoints / "epoch-0002")
    resumed = train(make_job(PRUNED, epochs=2, checkpoint_dir=str(checkpoints), resume=True))
    assert len(resumed.losses) < len(straight.losses)  # it trained the second epoch only
    assert torch.equal(resumed.model.module.lookup.kept, straight.model.module.lookup.kept)
    assert resumed.metrics["test/auc"] == pytest.approx(straight.metrics["test/auc"], abs=1e-6)


def test_more_epochs_on_resume_keep_the_first_schedule(make_job, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    first = train(make_job(PRUNED, epochs=1, checkpoint_dir=checkpoints))
    log = MetricLog()
    extended = train(make_job(PRUNED, epochs=2, checkpoint_dir=checkpoints, resume=True), log)
    assert not any("pruning/kept_ids" in metrics for _, metrics in log.metrics)  # the schedule had finished
    assert torch.equal(extended.model.module.lookup.kept, first.model.module.lookup.kept)


OPTEMBED = {"strategy": "optembed", "compression": 10, "population": 6, "parents": 3, "generations": 2}


def test_optembed_searches_once_after_the_supernet_and_logs_its_choice(make_job):
    job = make_job(OPTEMBED, epochs=4, batch_size=512)
    log = MetricLog()
    result = train(job, log)
    searches = [metrics for _, metrics in log.metrics if "optembed/search_val_auc" in metrics]
    assert len(searches) == 1 and searches[0]["epoch"] == 2  # the epoch that reaches supernet_end = 0.5
    lookup = result.model.module.lookup
    features = lookup.feature_names
    assert [searches[0][f"optembed/width/{feature}"] for feature in features] == lookup.widths.tolist()
    epochs = [metrics for _, metrics in log.metrics if "best_epoch" in metrics]
    assert all(metrics["best_epoch"] == 0 for metrics in epochs[:1])  # the supernet's epoch is never the best
    assert result.metrics["best_epoch"] >= 2
    assert result.metrics["compact/test/auc"] == pytest.approx(result.metrics["test/auc"], abs=1e-6)
    assert result.shipped_memory.total_bytes <= result.memory.full_bytes / 10


def test_resume_restores_the_searched_architecture(make_job, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    straight = train(make_job(OPTEMBED, epochs=3, checkpoint_dir=str(checkpoints), keep="all"))
    shutil.rmtree(checkpoints / "epoch-0003")
    resumed = train(make_job(OPTEMBED, epochs=3, checkpoint_dir=str(checkpoints), resume=True))
    for name in ("kept", "widths", "searched"):
        assert torch.equal(getattr(resumed.model.module.lookup, name), getattr(straight.model.module.lookup, name))
    assert resumed.metrics["test/auc"] == pytest.approx(straight.metrics["test/auc"], abs=1e-6)
