"""Unified Embedding: one shared table, independent salts per feature and lookup, variable sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.hashes import hash_ids
from tests.tables.conftest import FEATURES, single_id_batch


def test_all_features_share_one_table(statistics):
    lookup = build_lookup(spec_from_mapping({"strategy": "unified", "rows": 500}), statistics)
    [config] = lookup.table_configs()
    assert config.num_embeddings == 500
    assert config.feature_names == [f"{feature}/0" for feature in FEATURES]
    assert list(lookup.storage.embedding_bags) == ["unified"]


def test_each_feature_hashes_with_its_own_salt(statistics):
    lookup = build_lookup(spec_from_mapping({"strategy": "unified", "rows": 1000, "lookups": 2}), statistics)
    ids = torch.arange(50_000)
    rows = {
        (feature, index): hash_ids(ids, salt, 1000)
        for feature in ("large", "huge")
        for index, salt in enumerate(lookup.salts[feature])
    }
    pairs = [(first, second) for first in rows for second in rows if first < second]
    assert len(pairs) == 6
    for first, second in pairs:
        assert abs((rows[first] == rows[second]).double().mean().item() - 0.001) < 0.0006


def test_a_vector_concatenates_its_lookups(statistics):
    spec = spec_from_mapping({"strategy": "unified", "embedding_dim": 8, "rows": 97, "lookups": 2, "chunk_dim": 4})
    lookup = build_lookup(spec, statistics)
    assert len(lookup.projections) == 0
    ids = np.array([[5, 6, 7, 8], [-40, 10**12, 3, 0]])
    pooled = lookup(single_id_batch(ids)).to_dict()
    table = lookup.storage.embedding_bags["unified"].weight
    for column, feature in enumerate(FEATURES):
        column_ids = torch.from_numpy(np.ascontiguousarray(ids[:, column]))
        parts = [table[hash_ids(column_ids, salt, 97)] for salt in lookup.salts[feature]]
        torch.testing.assert_close(pooled[feature], torch.cat(parts, dim=1))


def test_lookups_by_cardinality_are_projected_and_counted(statistics):
    spec = spec_from_mapping(
        {"strategy": "unified", "embedding_dim": 16, "bytes": 60_000, "lookups": "cardinality", "chunk_dim": 4}
    )
    lookup = build_lookup(spec, statistics)
    counts = statistics.cardinalities
    expected = {feature: min(4, max(1, int(np.ceil(np.log10(counts[feature] + 1) / 2)))) for feature in FEATURES}
    assert lookup.lookups == expected
    projected = {feature for feature in FEATURES if expected[feature] * 4 != 16}
    assert set(lookup.projections) == projected
    report = lookup.memory_report()
    projection_bytes = sum(expected[feature] * 4 * 16 * 4 for feature in projected)
    assert report.parameter_bytes == lookup.rows * 4 * 4 + projection_bytes
    assert 60_000 - 16 < report.total_bytes <= 60_000


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rows": 8, "lookups": 0}, "lookups must be at least 1"),
        ({"rows": 8, "lookups": "many"}, "'lookups' must be an integer or one of 'cardinality'"),
        ({"rows": 8, "chunk_dim": 6}, "chunk_dim must be a positive multiple of 4"),
    ],
)
def test_bad_unified_specs_are_explained(values, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_mapping({"strategy": "unified", **values})


def test_small_features_can_keep_exact_tables(statistics):
    spec = spec_from_mapping({"strategy": "unified", "compression": 20, "exact_when_fits": True})
    lookup = build_lookup(spec, statistics)
    assert lookup.exact == {"small", "medium"}
    [shared] = [config for config in lookup.table_configs() if config.name == "unified"]
    assert shared.feature_names == ["large/0", "huge/0"]
    report = lookup.memory_report()
    assert report.index_bytes == 8 * (statistics.cardinalities["small"] + statistics.cardinalities["medium"])
    assert 0.99 * lookup.full_bytes / 20 <= report.total_bytes <= lookup.full_bytes / 20
    vocabulary = statistics.vocabulary("medium", 1)
    ids = np.zeros((len(vocabulary), len(FEATURES)), dtype=np.int64)
    ids[:, 1] = vocabulary
    assert torch.unique(lookup(single_id_batch(ids)).to_dict()["medium"], dim=0).shape[0] == len(vocabulary)
    with pytest.raises(ConfigError, match="exact_when_fits needs a budget"):
        spec_from_mapping({"strategy": "unified", "rows": 10, "exact_when_fits": True})
