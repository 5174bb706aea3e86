"""Hashing: the torch hash against a numpy uint64 reference, spread and independence, k-hash combines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.budget import water_fill
from recsys.tables.hashes import derive_salt, hash_ids
from tests.tables.conftest import FEATURES, single_id_batch


def reference_hash(ids: np.ndarray, salt: int, buckets: int) -> np.ndarray:
    """SplitMix64's finaliser in unsigned numpy arithmetic (no torch), mod buckets."""
    with np.errstate(over="ignore"):
        value = ids.astype(np.int64).view(np.uint64) ^ np.array([salt], dtype=np.int64).view(np.uint64)
        value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        value = value ^ (value >> np.uint64(31))
    return ((value & np.uint64(2**63 - 1)) % np.uint64(buckets)).astype(np.int64)


def test_hash_matches_unsigned_reference():
    ids = np.concatenate([np.arange(-1000, 1000), [-(2**63), 2**63 - 1, 2**40 + 3]])
    for seed in (0, 7):
        salt = derive_salt(seed, 3, 1)
        expected = reference_hash(ids, salt, 1009)
        np.testing.assert_array_equal(hash_ids(torch.from_numpy(ids), salt, 1009).numpy(), expected)


def test_buckets_are_even_and_salts_independent():
    ids = torch.arange(200_000)
    first = hash_ids(ids, derive_salt(0, 0, 0), 100)
    second = hash_ids(ids, derive_salt(0, 0, 1), 100)
    counts = torch.bincount(first, minlength=100).double()
    chi_square = ((counts - 2000) ** 2 / 2000).sum().item()
    assert chi_square < 160  # 99 degrees of freedom: p < 1e-4 above this
    assert abs((first == second).double().mean().item() - 0.01) < 0.002


def table_rows(lookup, feature: str, rows: torch.Tensor) -> torch.Tensor:
    return lookup.storage.embedding_bags[f"hashing_{feature}"].weight[rows]


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_k_hash_functions_combine_their_rows(statistics, combine):
    spec = spec_from_mapping(
        {
            "strategy": "hashing",
            "embedding_dim": 8,
            "rows": 97,
            "hash_functions": 2,
            "combine": combine,
            "seed": 3,
            "exact_when_fits": False,
        }
    )
    lookup = build_lookup(spec, statistics)
    ids = np.array([[5, 6, 7, 8], [-40, 10**12, 3, 0]])
    pooled = lookup(single_id_batch(ids)).to_dict()
    for column, feature in enumerate(FEATURES):
        column_ids = torch.from_numpy(ids[:, column])
        parts = [table_rows(lookup, feature, hash_ids(column_ids, salt, 97)) for salt in lookup.salts[feature]]
        expected = parts[0] + parts[1] if combine == "sum" else torch.cat(parts, dim=1)
        torch.testing.assert_close(pooled[feature], expected)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_features_that_fit_are_mapped_exactly(statistics, combine):
    rows = 100 if combine == "sum" else 200  # concat rows are half as wide
    spec = spec_from_mapping(
        {"strategy": "hashing", "embedding_dim": 8, "rows": rows, "hash_functions": 2, "combine": combine}
    )
    lookup = build_lookup(spec, statistics)
    assert lookup.exact == {"small", "medium"}  # 3 and 60 distinct ids fit in those bytes; 3000 and 20000 do not
    assert lookup.rows["medium"] == statistics.cardinalities["medium"] + 1
    assert lookup.rows["huge"] == rows
    vocabulary = statistics.vocabulary("medium", 1)
    ids = np.zeros((len(vocabulary), len(FEATURES)), dtype=np.int64)
    ids[:, 1] = vocabulary
    vectors = lookup(single_id_batch(ids)).to_dict()["medium"]
    assert torch.unique(vectors, dim=0).shape[0] == len(vocabulary)  # no two seen ids share a vector
    hashed = build_lookup(spec_from_mapping({**spec.to_dict(), "exact_when_fits": False}), statistics)
    assert hashed.exact == frozenset() and hashed.memory_report().index_bytes == 0
    assert set(hashed.rows.values()) == {rows}


def test_exact_features_never_cost_more_than_hashing_them(statistics):
    # concat rows are dim / 2 wide: 70 rows of 4 floats cannot hold 61 ids at 8 floats exactly
    spec = spec_from_mapping(
        {"strategy": "hashing", "embedding_dim": 8, "rows": 70, "hash_functions": 2, "combine": "concat"}
    )
    lookup = build_lookup(spec, statistics)
    assert lookup.exact == {"small"}
    assert lookup.memory_report().total_bytes <= 4 * 70 * 4 * 4


def test_budget_without_exact_tables_is_spent_on_hashed_rows(statistics):
    spec = spec_from_mapping({"strategy": "hashing", "embedding_dim": 8, "compression": 1, "exact_when_fits": False})
    lookup = build_lookup(spec, statistics)
    assert lookup.rows == {feature: count + 1 for feature, count in statistics.cardinalities.items()}


def test_a_feature_hashes_alike_in_any_feature_order():
    ids = np.arange(50)
    forward = FeatureStatistics.from_ids({"a": ids, "b": ids})
    backward = FeatureStatistics.from_ids({"b": ids, "a": ids})
    spec = spec_from_mapping({"strategy": "hashing", "rows": 7, "exact_when_fits": False})
    assert build_lookup(spec, forward).salts == build_lookup(spec, backward).salts


def test_bytes_budget_is_the_total_size(statistics):
    spec = spec_from_mapping({"strategy": "hashing", "embedding_dim": 8, "bytes": 100_000})
    report = build_lookup(spec, statistics).memory_report()
    assert 95_000 <= report.total_bytes <= 100_000


def test_water_fill_cuts_the_largest_first():
    sizes = {"a": 10, "b": 100, "c": 1000, "d": 5000}
    shares = water_fill(sizes, 1000)
    assert shares["a"] == 10 and shares["b"] == 100
    assert shares["c"] == shares["d"] == 445
    assert water_fill(sizes, 10_000) == sizes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rows": 10, "compression": 2}, "exactly one budget"),
        ({}, "exactly one budget"),
        ({"compression": 0.5}, "at least 1"),
        ({"rows": 10, "hash_functions": 3, "combine": "concat"}, "make embedding_dim a multiple of 12"),
        ({"rows": 10, "hash_functions": 8, "combine": "concat"}, "make embedding_dim a multiple of 32"),
        ({"rows": 10, "combine": "mean"}, "one of 'sum', 'concat'"),
        ({"rows": "10"}, "'rows' must be an integer"),
    ],
)
def test_bad_specs_are_explained(values, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_mapping({"strategy": "hashing", **values})
