"""End-to-end training on planted-signal data: real AUC, collisions cost AUC, every table learns, determinism."""

from __future__ import annotations

import copy

import pytest
import torch

from recsys.data.loader import BatchLoader
from recsys.train.distributed import ensure_process_group, make_optimizer, shard_model
from recsys.train.finished import finished_model_of_checkpoint
from recsys.train.job import build
from recsys.train.loop import train


def test_full_table_learns_the_planted_signal_and_hashing_at_100x_loses_auc(make_job):
    full = train(make_job(epochs=2))
    hashed = train(make_job({"strategy": "hashing", "compression": 100}, epochs=2))
    assert full.metrics["test/auc"] > 0.75
    assert full.metrics["val/auc"] > 0.75
    assert full.metrics["test/logloss"] < 0.5
    assert full.metrics["test/auc"] - hashed.metrics["test/auc"] > 0.02
    assert hashed.memory.total_bytes * 50 < full.memory.total_bytes


def test_one_step_updates_every_table_with_the_fused_optimizer(make_job):
    ensure_process_group()
    job = make_job()
    model, _ = build(job)
    sharded = shard_model(model, sparse_learning_rate=0.05)
    optimizer = make_optimizer(sharded, "adam", 1e-3)
    before = copy.deepcopy(sharded.module.lookup.storage.state_dict())
    batch = next(iter(BatchLoader(job.cache, "train", 512)))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(sharded(batch.dense, batch.sparse), batch.labels)
    loss.backward()
    optimizer.step()
    after = sharded.module.lookup.storage.state_dict()
    for name, weight in before.items():
        change = (local(after[name]) - local(weight)).abs().amax().item()
        # row-wise Adagrad's first step moves a used row by about the learning rate; Adam would move 1e-3
        assert change > 0.01, name


def local(tensor) -> torch.Tensor:
    return tensor.local_shards()[0].tensor if hasattr(tensor, "local_shards") else tensor


def test_same_seed_same_run(make_job):
    first = train(make_job(seed=5))
    second = train(make_job(seed=5))
    other = train(make_job(seed=6))
    assert first.losses == second.losses
    assert first.metrics["test/auc"] == second.metrics["test/auc"]
    assert first.losses != other.losses


def test_resume_continues_exactly_where_the_run_stopped(make_job, tmp_path):
    straight = train(make_job(epochs=2))
    checkpoints = str(tmp_path / "checkpoints")
    train(make_job(epochs=1, checkpoint_dir=checkpoints))
    resumed = train(make_job(epochs=2, checkpoint_dir=checkpoints, resume=True))
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]
    for name in ("val/auc", "test/auc", "test/logloss"):
        assert resumed.metrics[name] == pytest.approx(straight.metrics[name], abs=1e-6)


def test_a_checkpoint_holds_the_managed_tables_id_to_row_state(make_job, tmp_path):
    tables = {"strategy": "managed", "compression": 10, "eviction_interval": 3}
    result = train(make_job(tables, epochs=1, checkpoint_dir=str(tmp_path / "checkpoints")))
    trained = {key: value for key, value in result.model.state_dict().items() if ".collisions." in key}
    restored = finished_model_of_checkpoint(tmp_path / "checkpoints").model.state_dict()
    assert any(key.endswith("_mch_sorted_raw_ids") for key in trained)
    assert (trained["lookup.collisions.C3._mch_counts"] > 0).any()  # ids were admitted and counted
    for key, value in trained.items():
        assert torch.equal(restored[key], value), key


def test_resume_refuses_another_table_spec(make_job, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    train(make_job(epochs=1, checkpoint_dir=checkpoints))
    with pytest.raises(ValueError, match="belongs to another run; .*tables.strategy: checkpoint 'full', now 'hashing'"):
        train(make_job({"strategy": "hashing", "rows": 100}, epochs=2, checkpoint_dir=checkpoints, resume=True))
    with pytest.raises(ValueError, match="train.seed: checkpoint 0, now 9"):
        train(make_job(epochs=2, seed=9, checkpoint_dir=checkpoints, resume=True))
    (tmp_path / "checkpoints" / "epoch-0001").rename(tmp_path / "checkpoints" / "epoch-0002.partial")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):  # a partial one is never resumed
        train(make_job(epochs=2, checkpoint_dir=checkpoints, resume=True))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train(make_job(epochs=2, checkpoint_dir=str(tmp_path / "empty"), resume=True))


def test_resume_refuses_a_checkpoint_whose_optimizer_state_has_another_layout(make_job, tmp_path):
    checkpoints = str(tmp_path / "checkpoints")
    train(make_job(epochs=1, checkpoint_dir=checkpoints, sharding="data_parallel"))
    with pytest.raises(ValueError, match="another layout.*was data_parallel, now rows.*--sharding"):
        train(make_job(epochs=2, checkpoint_dir=checkpoints, resume=True, sharding="table_wise"))
    resumed = train(make_job(epochs=2, checkpoint_dir=checkpoints, resume=True, sharding="data_parallel"))
    assert resumed.metrics["epoch"] == 2


@pytest.mark.parametrize("optimizer", ["EXACT_SGD", "EXACT_ROWWISE_ADAGRAD", "EXACT_ADAGRAD"])
@pytest.mark.parametrize("mode", ["L2", "DECOUPLE"])
def test_fbgemm_cpu_kernels_ignore_weight_decay_so_recsys_offers_none(optimizer, mode):
    """fbgemm-gpu-cpu 1.8.0 takes `weight_decay` and `weight_decay_mode` but its CPU kernels do not apply them
    (one step moves a row exactly as without decay). When this fails, fbgemm applies it: offer table decay."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode

    def one_step(decay: float, decay_mode: WeightDecayMode) -> torch.Tensor:
        table = SplitTableBatchedEmbeddingBagsCodegen(
            [(10, 8, EmbeddingLocation.HOST, ComputeDevice.CPU)], optimizer=getattr(EmbOptimType, optimizer),
            learning_rate=0.1, weight_decay=decay, weight_decay_mode=decay_mode,
        )  # fmt: skip
        weights = table.split_embedding_weights()[0]
        with torch.no_grad():
            weights.copy_(torch.linspace(-2, 2, 80).view(10, 8))
        pooled = table(torch.tensor([1, 2]), torch.tensor([0, 1, 2]))
        (pooled * torch.linspace(0.5, 1.5, 8)).sum().backward()
        return weights[1:3].clone()

    without = one_step(0.0, WeightDecayMode.NONE)
    with_decay = one_step(0.5, getattr(WeightDecayMode, mode))
    torch.testing.assert_close(with_decay, without, atol=0, rtol=0)


def test_adam_and_weight_decay_on_tables_need_data_parallel_tables():
    from recsys.train.config import TrainConfig

    for settings in ({"sparse_optimizer": "adam"}, {"sparse_weight_decay": 0.1}):
        with pytest.raises(ValueError, match="needs data-parallel tables"):
            TrainConfig(**settings)
        TrainConfig(**settings, sharding="data_parallel")


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_data_parallel_tables_train_with_adam_and_its_weight_decay(make_job, decay):
    from recsys.train.sharding import ShardingRequest

    ensure_process_group()
    job = make_job(seed=4)
    model, _ = build(job)
    sharded = shard_model(model, 0.01, "adam", ShardingRequest("data_parallel"))
    optimizer = make_optimizer(sharded, "adam", 1e-3, "adam", 0.01, decay)
    before = {name: local(value).clone() for name, value in sharded.module.lookup.storage.state_dict().items()}
    batch = next(iter(BatchLoader(job.cache, "train", 512)))
    torch.nn.functional.binary_cross_entropy_with_logits(sharded(batch.dense, batch.sparse), batch.labels).backward()
    optimizer.step()
    for name, value in sharded.module.lookup.storage.state_dict().items():
        change = (local(value) - before[name]).abs()
        moved = change > 0
        # Adam's first step moves a weight by lr * g / (|g| + eps): the learning rate, less only where |g| ~ eps
        assert change.max() <= 0.01 * 1.001, name
        at_learning_rate = ((change[moved] - 0.01).abs() < 1e-4).float().mean()  # float32 steps round at ~1e-5
        assert at_learning_rate > 0.8, name
        rows_moved = moved.any(dim=1)
        if decay:  # the L2 term gives every row a gradient: all rows move, not only the batch's
            assert rows_moved.all(), name
        else:
            assert rows_moved.any() and not rows_moved.all(), name
