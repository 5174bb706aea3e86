"""QR: exact mixed-radix digits up to 2^63 - 1, sizes that cover the range, distinct vectors per id."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.qr import check_partitions, mixed_radix_digits, partition_sizes, sizes_for
from tests.tables.conftest import FEATURES, single_id_batch

LARGEST = 2**63 - 1


def reconstruct(digits: list[int], sizes: list[int]) -> int:
    """Python-integer inverse of the mixed radix (independent of torch)."""
    value, weight = 0, 1
    for digit, size in zip(digits, sizes):
        value += digit * weight
        weight *= size
    return value


@pytest.mark.parametrize(("index_range", "sizes"), [(1000, [32, 32]), (1000, [7, 12, 12]), (97, [10, 10])])
def test_every_index_in_range_gets_its_own_digits(index_range, sizes):
    check_partitions(sizes, index_range)
    digits = mixed_radix_digits(torch.arange(index_range), sizes)
    tuples = set(zip(*[digit.tolist() for digit in digits]))
    assert len(tuples) == index_range
    for digit, size in zip(digits, sizes):
        assert 0 <= digit.min() and digit.max() < size


@pytest.mark.parametrize("partitions", [2, 3, 4])
def test_digits_are_exact_at_the_largest_ids(partitions):
    base = math.ceil(LARGEST ** (1 / partitions)) + 1
    sizes = sizes_for(base, partitions, LARGEST)
    check_partitions(sizes, LARGEST)
    ids = [0, 1, base - 1, base, base + 1, 2**53 + 1, 2**62, LARGEST - 1, LARGEST - base, LARGEST - 2]
    digits = mixed_radix_digits(torch.tensor(ids, dtype=torch.int64), sizes)
    for position, value in enumerate(ids):
        row = [int(digit[position]) for digit in digits]
        assert all(0 <= digit < size for digit, size in zip(row, sizes))
        assert reconstruct(row, sizes) == value  # float division would already fail at 2**53 + 1


def test_sizes_that_do_not_cover_the_range_are_refused():
    with pytest.raises(ValueError, match="distinct ids would share a vector"):
        check_partitions([10, 10], 101)
    with pytest.raises(ValueError, match="must be positive"):
        check_partitions([0, 10], 5)


@pytest.mark.parametrize(("index_range", "partitions"), [(10_000, 2), (1_000_000, 2), (1_000_000, 3), (5, 2)])
def test_partition_sizes_use_the_budget_and_cover_the_range(index_range, partitions):
    smallest = min(sum(sizes_for(base, partitions, index_range)) for base in range(1, 2000))
    assert partition_sizes(index_range, partitions, smallest - 1) is None
    previous = 0
    for budget in (smallest, smallest * 2, smallest * 10):
        sizes = partition_sizes(index_range, partitions, budget)
        assert len(sizes) == partitions and sum(sizes) <= budget
        assert math.prod(sizes) >= index_range
        assert sum(sizes) >= previous
        previous = sum(sizes)


@pytest.mark.parametrize("operation", ["mult", "add", "concat"])
def test_every_vocabulary_id_gets_a_distinct_vector(statistics, operation):
    spec = spec_from_mapping(
        {"strategy": "qr", "embedding_dim": 8, "rows": 600, "operation": operation, "index": "vocabulary"}
    )
    lookup = build_lookup(spec, statistics)
    sizes = lookup.plans["huge"].sizes
    assert len(sizes) == 2 and sum(sizes) <= 600 and math.prod(sizes) >= lookup.plans["huge"].index_range
    vocabulary = statistics.vocabulary("huge", 1)
    ids = np.zeros((len(vocabulary), len(FEATURES)), dtype=np.int64)
    ids[:, 3] = vocabulary
    vectors = lookup(single_id_batch(ids)).to_dict()["huge"]
    assert torch.unique(vectors, dim=0).shape[0] == len(vocabulary)
    assert lookup.memory_report().parameter_bytes < 0.2 * lookup.memory_report().full_bytes


def test_mult_multiplies_the_rows_of_each_partition(statistics):
    spec = spec_from_mapping({"strategy": "qr", "embedding_dim": 4, "rows": 600, "index": "vocabulary"})
    lookup = build_lookup(spec, statistics)
    ids = np.stack([training_column(statistics, feature)[:6] for feature in FEATURES], axis=1)
    pooled = lookup(single_id_batch(ids)).to_dict()
    for column, feature in enumerate(FEATURES):
        indices = lookup.vocabularies.rows(feature, torch.from_numpy(np.ascontiguousarray(ids[:, column])))
        if lookup.plans[feature].sizes is None:
            continue
        remainder, quotient = mixed_radix_digits(indices, lookup.plans[feature].sizes)
        tables = lookup.storage.embedding_bags
        expected = tables[f"qr_{feature}_0"].weight[remainder] * tables[f"qr_{feature}_1"].weight[quotient]
        torch.testing.assert_close(pooled[feature], expected)


def training_column(statistics, feature: str) -> np.ndarray:
    """Seen ids of a feature, repeated to at least 6."""
    return np.resize(statistics.frequencies(feature)[0], 6)


def test_rows_never_make_a_table_larger_than_full(statistics):
    lookup = build_lookup(spec_from_mapping({"strategy": "qr", "rows": 4}), statistics)
    for feature in FEATURES:
        plan = lookup.plans[feature]
        rows = sum(plan.sizes) if plan.sizes else plan.index_range
        assert rows <= max(4, statistics.cardinalities[feature] + 1)
    assert lookup.memory_report().compression > 1


def test_threshold_features_come_out_of_the_budget(statistics):
    spec = spec_from_mapping({"strategy": "qr", "compression": 20, "threshold": 5000})
    lookup = build_lookup(spec, statistics)
    assert lookup.plans["large"].sizes is None and lookup.plans["huge"].sizes is not None
    assert lookup.memory_report().total_bytes <= lookup.full_bytes / 20
    with pytest.raises(ValueError, match="features below threshold 100,000 need .* lower the threshold"):
        build_lookup(spec_from_mapping({"strategy": "qr", "compression": 20, "threshold": 100_000}), statistics)


def test_small_features_stay_full(statistics):
    spec = spec_from_mapping({"strategy": "qr", "rows": 4, "threshold": 100})
    lookup = build_lookup(spec, statistics)
    assert [lookup.plans[feature].sizes is None for feature in FEATURES] == [True, True, False, False]


def test_a_share_too_small_shrinks_the_hash_range_or_is_refused(statistics):
    lookup = build_lookup(spec_from_mapping({"strategy": "qr", "compression": 500}), statistics)
    plan = lookup.plans["huge"]
    assert plan.index_range < 16 * (statistics.cardinalities["huge"] + 1)
    check_partitions(plan.sizes, plan.index_range)
    with pytest.raises(ValueError, match="cannot fit feature .* or use index = 'hash'"):
        build_lookup(spec_from_mapping({"strategy": "qr", "compression": 20, "index": "vocabulary"}), statistics)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rows": 8, "partitions": 1}, "partitions must be at least 2"),
        ({"rows": 8, "partitions": 3, "operation": "concat"}, "make embedding_dim a multiple of 12"),
        ({"rows": 8, "operation": "divide"}, "one of 'mult', 'add', 'concat'"),
        ({"rows": 8, "index": "exact"}, "one of 'hash', 'vocabulary'"),
    ],
)
def test_bad_qr_specs_are_explained(values, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_mapping({"strategy": "qr", **values})


def test_itertools_is_the_reference_for_small_ranges():
    sizes = [3, 4, 5]
    digits = mixed_radix_digits(torch.arange(60), sizes)
    expected = [(a, b, c) for c, b, a in itertools.product(range(5), range(4), range(3))]
    assert list(zip(*[digit.tolist() for digit in digits])) == expected
