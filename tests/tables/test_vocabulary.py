"""Vocabularies: rows of several features at once equal the rows feature by feature."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.jagged import remap_features
from recsys.tables.vocabulary import Vocabularies

IDS = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(-3, 12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    vocabularies=st.lists(st.sets(IDS, max_size=6), min_size=1, max_size=4),
    queries=st.lists(st.lists(IDS, max_size=5), min_size=4, max_size=4),
)
def test_rows_of_several_features_equal_their_rows_one_by_one(vocabularies, queries):
    features = [f"f{index}" for index in range(len(vocabularies))]
    table = Vocabularies({name: np.array(sorted(ids), dtype=np.int64) for name, ids in zip(features, vocabularies)})
    parts = [torch.tensor(ids, dtype=torch.int64) for ids in queries[: len(features)]]
    values = torch.cat(parts)
    together = table.rows_of(features, values, [len(part) for part in parts])
    one_by_one = torch.cat([table.rows(name, part) for name, part in zip(features, parts)])
    torch.testing.assert_close(together, one_by_one, rtol=0, atol=0)


def test_the_full_lookup_remaps_a_batch_in_order_as_feature_by_feature():
    generator = np.random.default_rng(0)
    statistics = FeatureStatistics.from_ids({name: generator.integers(0, 50, 200) for name in ("a", "b", "c")})
    lookup = build_lookup(spec_from_mapping({"strategy": "full", "min_count": 2}), statistics)
    batch = KeyedJaggedTensor(
        keys=["a", "b", "c"],
        values=torch.from_numpy(generator.integers(-5, 60, 9)),
        lengths=torch.tensor([1, 2, 0, 1, 1, 1, 1, 1, 1], dtype=torch.int32),
    )
    fused = lookup.remap(batch)
    reference = remap_features(batch, lookup.remap_feature, lookup.feature_names)
    torch.testing.assert_close(fused.values(), reference.values(), rtol=0, atol=0)
    torch.testing.assert_close(fused.lengths(), reference.lengths(), rtol=0, atol=0)
