"""Full tables: a row per vocabulary id, one shared row for everything else."""

from __future__ import annotations

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.vocabulary import vocabulary_rows


def test_vocabulary_rows_and_the_shared_row():
    vocabulary = torch.tensor([-7, 12, 40, 977])
    ids = torch.tensor([40, 5, 977, -7, -1, 2**62])
    assert vocabulary_rows(vocabulary, ids).tolist() == [2, 4, 3, 0, 4, 4]
    assert vocabulary_rows(torch.tensor([], dtype=torch.int64), ids).tolist() == [0] * 6


def test_min_count_moves_rare_ids_to_the_shared_row():
    statistics = FeatureStatistics.from_ids({"f": np.array([1, 1, 1, 2, 2, 3])})
    lookup = build_lookup(spec_from_mapping({"strategy": "full", "embedding_dim": 4, "min_count": 2}), statistics)
    table = lookup.storage.embedding_bags["full_f"].weight
    assert table.shape == (3, 4)
    ids = torch.tensor([1, 2, 3, 99])
    pooled = lookup(KeyedJaggedTensor(keys=["f"], values=ids, lengths=torch.ones(4, dtype=torch.int32))).values()
    torch.testing.assert_close(pooled, table[[0, 1, 2, 2]])
