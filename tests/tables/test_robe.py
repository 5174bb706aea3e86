"""ROBE: one shared array sized from the budget, each vector its blocks at hashed offsets (checked
against the array read by hand), blocks of one id independent, and spec errors that name the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from tests.tables.conftest import FEATURES, single_id_batch


def robe_spec(**options):
    return spec_from_mapping({"strategy": "robe", "embedding_dim": 16, "block": 4, **options})


def test_one_array_holds_the_whole_budget(statistics):
    full = sum((count + 1) * 16 * 4 for count in statistics.cardinalities.values())
    lookup = build_lookup(robe_spec(compression=100), statistics)
    (table,) = list(lookup.storage.parameters())
    assert table.shape == (int(full / 100) // 16, 4)  # 16 bytes per block of 4 floats
    assert lookup.memory_report().total_bytes == table.numel() * 4


def test_a_vector_is_its_blocks_read_at_hashed_offsets(statistics):
    lookup = build_lookup(robe_spec(rows=97, seed=3), statistics)
    array = next(lookup.storage.parameters()).detach()
    ids = np.array([[5, 17, -40, 2**40], [0, 1, 2, 3]])
    vectors = lookup(single_id_batch(ids)).values().detach().view(2, len(FEATURES), 16)
    for row in range(2):
        for column, feature in enumerate(FEATURES):
            identifier = torch.tensor([int(ids[row, column])])
            offsets = [int(hash_ids(identifier, derive_salt(3, feature_key(feature), block), 97)) for block in range(4)]
            torch.testing.assert_close(vectors[row, column], torch.cat([array[offset] for offset in offsets]))


def test_the_blocks_of_many_ids_spread_over_the_array(statistics):
    lookup = build_lookup(robe_spec(rows=50), statistics)
    with torch.no_grad():
        next(lookup.storage.parameters()).copy_(torch.arange(50, dtype=torch.float32)[:, None].expand(50, 4))
    ids = np.arange(2000)[:, None].repeat(len(FEATURES), axis=1)
    blocks = lookup(single_id_batch(ids)).values().view(2000, len(FEATURES), 4, 4)[:, :, :, 0]
    counts = np.bincount(blocks.reshape(-1).long().numpy(), minlength=50)
    assert counts.min() > 0.6 * counts.mean()  # every block used, none much more than the others
    same_block = (blocks[:, :, 0] == blocks[:, :, 1]).float().mean()
    assert same_block < 0.05  # an id's blocks are hashed independently (1 in 50 by chance)


def test_spec_errors_name_the_option():
    with pytest.raises((ConfigError, ValueError), match="block"):
        robe_spec(compression=10, block=6)
    with pytest.raises((ConfigError, ValueError), match="block"):
        robe_spec(compression=10, block=32)
