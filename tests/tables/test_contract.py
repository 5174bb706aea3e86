"""The lookup contract, run for every preset in tables/ and so for every registered strategy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.tables import STRATEGIES, build_lookup, spec_from_mapping
from tests.tables.conftest import FEATURES, PRESETS, load_spec, single_id_batch, training_ids

EXTREME_IDS = [-(2**63), -1, 0, 2**62, 2**63 - 1, 123456789012345]


def seen_ids(rows: int, seed: int = 1) -> np.ndarray:
    ids = training_ids(seed)
    return np.stack([ids[name][:rows] for name in FEATURES], axis=1)


def test_every_registered_strategy_has_a_preset():
    assert {load_spec(path).strategy for path in PRESETS} == set(STRATEGIES)


def test_output_is_one_vector_per_feature(spec, statistics):
    lookup = build_lookup(spec, statistics)
    pooled = lookup(single_id_batch(seen_ids(32)))
    assert pooled.keys() == list(FEATURES)
    assert pooled.values().shape == (32, len(FEATURES) * spec.embedding_dim)
    assert lookup.embedding_dim == spec.embedding_dim
    assert torch.isfinite(pooled.values()).all()


def test_gradients_reach_the_storage(spec, statistics):
    lookup = build_lookup(spec, statistics)
    lookup(single_id_batch(seen_ids(64))).values().pow(2).sum().backward()
    tables = list(lookup.storage.parameters())
    assert tables
    for table in tables:
        assert table.grad is not None and table.grad.abs().sum() > 0


def test_same_seed_same_module(spec, statistics):
    outputs = []
    for _ in range(2):
        torch.manual_seed(11)
        outputs.append(build_lookup(spec, statistics)(single_id_batch(seen_ids(16))).values())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_negative_unseen_and_extreme_ids(spec, statistics):
    lookup = build_lookup(spec, statistics)
    ids = np.array([[value] * len(FEATURES) for value in EXTREME_IDS])
    pooled = lookup(single_id_batch(ids)).values()
    assert pooled.shape == (len(EXTREME_IDS), len(FEATURES) * spec.embedding_dim)
    assert torch.isfinite(pooled).all()


def test_bags_pool_by_sum_and_key_order_does_not_matter(spec, statistics):
    lookup = build_lookup(spec, statistics)
    ids = seen_ids(6)
    singles = lookup(single_id_batch(ids)).values().view(6, len(FEATURES), -1)
    # row 0 holds ids of rows 1 and 2 in one bag, row 1 an empty bag, in reversed key order
    keys = list(reversed(FEATURES))
    values, lengths = [], []
    for feature in keys:
        column = FEATURES.index(feature)
        values += [ids[1, column], ids[2, column]]
        lengths += [2, 0]
    bag = KeyedJaggedTensor(keys=keys, values=torch.tensor(values), lengths=torch.tensor(lengths, dtype=torch.int32))
    pooled = lookup(bag).to_dict()
    for column, feature in enumerate(FEATURES):
        torch.testing.assert_close(pooled[feature][0], singles[1, column] + singles[2, column])
        assert pooled[feature][1].abs().sum() == 0


def test_a_batch_of_empty_bags_gives_zero_vectors(spec, statistics):
    lookup = build_lookup(spec, statistics)
    empty = KeyedJaggedTensor(
        keys=list(FEATURES),
        values=torch.empty(0, dtype=torch.int64),
        lengths=torch.zeros(3 * len(FEATURES), dtype=torch.int32),
    )
    pooled = lookup(empty).values()
    assert pooled.shape == (3, len(FEATURES) * spec.embedding_dim)
    assert pooled.abs().sum() == 0


def test_memory_report_is_the_real_tensor_bytes_of_the_serving_form(spec, statistics):
    lookup = build_lookup(spec, statistics)
    report = lookup.memory_report()
    if isinstance(lookup.storage, EmbeddingBagCollection):
        rows = sum(parameter.shape[0] for parameter in lookup.storage.parameters())
        assert report.optimizer_bytes == rows * 4
    else:  # dhe: no table, its decoder is trained by the dense optimizer
        assert report.optimizer_bytes == 0  # training's optimizer state, on the tables it trains
    served = lookup.compact()
    parameters = sum(parameter.numel() * parameter.element_size() for parameter in served.parameters())
    buffers = sum(buffer.numel() * buffer.element_size() for buffer in served.buffers())
    assert report.parameter_bytes == parameters
    assert report.index_bytes == buffers
    assert served.memory_report().total_bytes == report.total_bytes
    full = sum((count + 1) * spec.embedding_dim * 4 for count in statistics.cardinalities.values())
    assert report.full_bytes == full
    assert report.compression == full / (parameters + buffers)


def test_serving_form_gives_the_same_vectors(spec, statistics):
    lookup = build_lookup(spec, statistics)
    served = lookup.compact()  # pruning finishes its schedule here, so compare afterwards
    ids = np.concatenate([seen_ids(40), np.array([[value] * len(FEATURES) for value in EXTREME_IDS])])
    with torch.no_grad():
        torch.testing.assert_close(served(single_id_batch(ids)).values(), lookup(single_id_batch(ids)).values())


def test_budget_is_met(spec, statistics):
    if getattr(spec, "compression", None) is None:
        pytest.skip(f"{spec.strategy} preset is not sized by compression")
    lookup = build_lookup(spec, statistics)
    report = lookup.memory_report()
    budget = report.full_bytes / spec.compression
    assert report.total_bytes <= budget * 1.0001
    if lookup.fills_budget:
        assert report.total_bytes >= 0.9 * budget


def test_spec_survives_a_round_trip(spec):
    assert spec_from_mapping(spec.to_dict()) == spec


def test_init_std_draws_every_row_from_that_normal(spec, statistics):
    torch.manual_seed(5)
    lookup = build_lookup(spec_from_mapping({**spec.to_dict(), "init_std": 0.02}), statistics)
    if spec.strategy in ("tt", "dhe"):  # vectors are products of cores or decoded: the vectors have that spread
        vectors = lookup(single_id_batch(seen_ids(4000))).values()
        assert abs(vectors.mean()) < 0.005 and 0.015 < vectors.std() < 0.025, vectors.std()
        return
    factors = getattr(lookup, "plans", None) is not None and getattr(spec, "operation", None) == "mult"
    for name, table in lookup.storage.named_parameters():
        values = table.detach().flatten()
        if factors and not name.endswith("_0.weight") and "_" in name.rsplit("qr_", 1)[-1]:
            assert 0.85 < values.mean() < 1.15, name  # qr's multiplicative factors start near one
            continue
        assert abs(values.mean()) < 0.01 and 0.015 < values.std() < 0.025, (name, values.std())
