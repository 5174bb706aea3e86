"""The model zoo's arithmetic (FM pairs, DCNv2 crosses) and that every model learns from the data."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recsys.models import MODELS
from recsys.models.dcnv2 import CrossLayer, DCNv2Config
from recsys.models.layers import MLP, BatchNorm, FactorizationMachine
from recsys.tables import STRATEGIES, spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.job import Job, build
from recsys.train.loop import train


def test_factorization_machine_sums_every_pair_once():
    vectors = torch.randn(3, 5, 4)
    expected = torch.stack(
        [sum(vectors[b, i] @ vectors[b, j] for i in range(5) for j in range(i + 1, 5)) for b in range(3)]
    )
    torch.testing.assert_close(FactorizationMachine()(vectors), expected)


@pytest.mark.parametrize("low_rank", [None, 2])
def test_cross_layer_is_x0_times_a_linear_map_of_x_plus_x(low_rank):
    layer = CrossLayer(6, low_rank)
    first, current = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(layer(first, current), first * layer.weight(current) + current)
    if low_rank is not None:
        assert sum(parameter.numel() for parameter in layer.parameters()) == 6 * 2 + 2 * 6 + 6


def test_dcnv2_config_is_checked():
    with pytest.raises(ValueError, match="cross_layers"):
        DCNv2Config(cross_layers=0)


SMALL = {"lr": {}, "fm": {}, "deepfm": {"hidden": (64, 64)}, "dcnv2": {"hidden": (64,)}, "dlrm": {}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_learns_the_planted_signal(make_job, name):
    job = make_job({"strategy": "full"}, epochs=1)
    job = dataclasses.replace(job, model=name, model_overrides=SMALL.get(name, {}))
    result = train(job)
    assert result.metrics["test/auc"] > 0.65, result.metrics


BUDGETS = {"full": {}, "mixed_dim": {"base_dim": 4}}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_and_strategy_learns_from_bags_without_dense_features(bag_cache, name, strategy):
    """MovieLens-like data: no dense features, a genre bag per row; the planted user x genre signal is learnable."""
    tables = {"strategy": strategy, "embedding_dim": 8, **BUDGETS.get(strategy, {"compression": 2})}
    config = TrainConfig(epochs=3, batch_size=128, progress=False)
    job = Job(bag_cache, spec_from_mapping(tables), name, config, model_overrides=SMALL.get(name, {}))
    result = train(job)
    assert result.metrics["test/auc"] > 0.6, result.metrics


def test_mlp_regularisers_sit_after_hidden_layers_only():
    mlp = MLP(6, [8, 4, 1], dropout=0.3, batch_norm=True)
    kinds = [type(layer).__name__ for layer in mlp]
    assert kinds == ["Linear", "BatchNorm", "ReLU", "Dropout", "Linear", "BatchNorm", "ReLU", "Dropout", "Linear"]
    with pytest.raises(ValueError, match="dropout"):
        MLP(6, [1], dropout=1.0)


def test_batch_norm_normalises_a_one_row_training_batch_by_running_statistics():
    layer = BatchNorm(3)
    layer.running_mean.fill_(2.0)
    layer.running_var.fill_(4.0)
    row = torch.tensor([[4.0, 2.0, 0.0]])
    layer.train()
    torch.testing.assert_close(layer(row), torch.tensor([[1.0, 0.0, -1.0]]), atol=1e-4, rtol=0)
    assert layer(torch.randn(5, 3)).shape == (5, 3)


def test_fm_without_dense_features_has_no_dense_field(bag_cache):
    job = Job(bag_cache, spec_from_mapping({"strategy": "full", "embedding_dim": 8}), "fm", TrainConfig(progress=False))
    model, _ = build(job)
    assert model.terms.dense_field is None
    vectors = torch.randn(2, 4, 8)
    torch.testing.assert_close(model.terms.interaction(vectors), FactorizationMachine()(vectors))
