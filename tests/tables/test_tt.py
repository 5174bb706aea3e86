"""TT-Rec: factorisations and ranks worked by hand, rows against the full table that an einsum of the
cores makes, and the budget with small features exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.hashes import hash_ids
from recsys.tables.tt import balanced_factors, fit_train, row_factors
from tests.tables.conftest import FEATURES, single_id_batch


def tt_spec(**options):
    return spec_from_mapping({"strategy": "tt", "embedding_dim": 16, **options})


def test_factors():
    assert balanced_factors(16, 3) == (4, 2, 2)
    assert balanced_factors(16, 2) == (4, 4)
    assert balanced_factors(12, 3) == (3, 2, 2)
    assert row_factors(1000, 3) == (10, 10, 10)
    assert row_factors(1001, 3) == (11, 11, 11)


def test_rank_is_the_largest_that_fits_and_rows_shrink_below_rank_4():
    spec = tt_spec(compression=10)
    # 999 ids -> 2,000 virtual rows -> 13^3; columns 4 x 2 x 2; floats 13 (4r + 2r^2 + 2r) = 13 (6r + 2r^2)
    assert fit_train(spec, 999, 9152).rank == 8  # 2,288 floats
    assert fit_train(spec, 999, 9151).rank == 4  # 728 floats
    smaller = fit_train(spec, 999, 2911)  # rank 4 over 13^3 needs 2,912 bytes: 12^3 rows take 2,688
    assert smaller.rank == 4 and smaller.row_factors == (12, 12, 12)


def test_rows_are_the_rows_of_the_table_the_cores_make(statistics):
    lookup = build_lookup(tt_spec(compression=50, seed=2), statistics)
    assert "huge" in lookup.trains and "small" not in lookup.trains
    train = lookup.trains["huge"]
    n1, n2, n3 = train.row_factors
    d1, d2, d3 = train.column_factors
    rank = train.rank
    weights = {name: parameter.detach().numpy() for name, parameter in lookup.storage.named_parameters()}
    first = weights["embedding_bags.tt_huge_core0.weight"].reshape(n1, d1, rank)
    middle = weights["embedding_bags.tt_huge_core1.weight"].reshape(n2, rank, d2, rank)
    last = weights["embedding_bags.tt_huge_core2.weight"].reshape(n3, rank, d3)
    table = np.einsum("aip,bpjq,cqk->abcijk", first, middle, last).reshape(n1 * n2 * n3, d1 * d2 * d3)
    ids = np.array([[1, 2, 3, value] for value in (0, 7, -3, 2**50, 123_456)])
    vectors = lookup(single_id_batch(ids)).values().detach().view(len(ids), len(FEATURES), 16)[:, 3]
    virtual = hash_ids(torch.from_numpy(ids[:, 3]), lookup.salts["huge"], n1 * n2 * n3).numpy()
    np.testing.assert_allclose(vectors.numpy(), table[virtual], rtol=1e-5, atol=1e-7)


def test_budget_and_exact_small_features(statistics):
    lookup = build_lookup(tt_spec(compression=10), statistics)
    report = lookup.memory_report()
    assert report.total_bytes <= report.full_bytes / 10
    assert set(lookup.trains) == {"huge"}  # 3, 60 and 3,000 ids fit their shares whole
    assert lookup.trains["huge"].rank >= 16


def test_spec_errors_name_the_option():
    with pytest.raises((ConfigError, ValueError), match="cores"):
        tt_spec(compression=10, cores=5)
    with pytest.raises((ConfigError, ValueError), match="max_rank"):
        tt_spec(compression=10, max_rank=6)
    with pytest.raises((ConfigError, ValueError), match="not rows"):
        tt_spec(rows=100)
