"""Mixed dimensions: the power rule, base dim and budget, popularity, projections, infeasible budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.mixed_dim import power_rule_dims
from tests.tables.conftest import FEATURES, single_id_batch


def test_dims_follow_the_power_rule():
    spec = spec_from_mapping({"strategy": "mixed_dim", "embedding_dim": 512, "base_dim": 512, "alpha": 0.5})
    sizes = {"a": 4.0, "b": 400.0, "c": 40_000.0}
    dims = power_rule_dims(sizes, 512 * 4**0.5, spec)
    assert dims == {"a": 512, "b": 52, "c": 4}  # 512 * (n / 4) ** -0.5 = 512, 51.2, 5.12, to multiples of 4
    rounded = power_rule_dims(sizes, 512 * 4**0.5, spec_from_mapping({**spec.to_dict(), "round_to_power_of_two": True}))
    assert rounded == {"a": 512, "b": 64, "c": 4}


def test_base_dim_goes_to_the_smallest_feature(statistics):
    lookup = build_lookup(spec_from_mapping({"strategy": "mixed_dim", "base_dim": 16, "alpha": 0.3}), statistics)
    assert lookup.dims["small"] == 16
    assert lookup.dims["small"] >= lookup.dims["medium"] >= lookup.dims["large"] >= lookup.dims["huge"] >= 1
    assert set(lookup.projections) == {feature for feature in FEATURES if lookup.dims[feature] != 16}


def test_the_budget_takes_the_widest_dims_that_fit(statistics):
    spec = spec_from_mapping({"strategy": "mixed_dim", "compression": 2})
    lookup = build_lookup(spec, statistics)
    budget = lookup.full_bytes / 2
    assert lookup.memory_report().total_bytes <= budget
    wider = {feature: min(16, dim + 4) for feature, dim in lookup.dims.items()}
    assert any(lookup.bytes_for({**lookup.dims, feature: wider[feature]}) > budget for feature in FEATURES)


def test_popularity_gives_skewed_features_more_dims():
    generator = np.random.default_rng(0)
    skewed = np.concatenate([np.zeros(9000, dtype=np.int64), np.arange(1000)])
    uniform = generator.permutation(np.arange(1000).repeat(10))
    statistics = FeatureStatistics.from_ids({"skewed": skewed, "uniform": uniform})
    spec = spec_from_mapping({"strategy": "mixed_dim", "base_dim": 16, "by": "popularity", "alpha": 0.5})
    lookup = build_lookup(spec, statistics)
    assert statistics.cardinalities["skewed"] == statistics.cardinalities["uniform"]
    assert lookup.dims["skewed"] > lookup.dims["uniform"]


def test_narrow_features_are_projected_to_the_model_dim(statistics):
    spec = spec_from_mapping({"strategy": "mixed_dim", "base_dim": 16, "alpha": 0.3})
    lookup = build_lookup(spec, statistics)
    ids = np.stack([np.resize(statistics.vocabulary(feature, 1), 5) for feature in FEATURES], axis=1)
    pooled = lookup(single_id_batch(ids)).to_dict()
    for column, feature in enumerate(FEATURES):
        rows = lookup.vocabularies.rows(feature, torch.from_numpy(np.ascontiguousarray(ids[:, column])))
        narrow = lookup.storage.embedding_bags[f"mixed_dim_{feature}"].weight[rows]
        assert narrow.shape[1] == lookup.dims[feature]
        expected = lookup.projections[feature](narrow) if feature in lookup.projections else narrow
        torch.testing.assert_close(pooled[feature], expected)


def test_an_impossible_budget_says_what_to_change(statistics):
    with pytest.raises(ValueError, match="use index = 'hash' with a smaller rows_factor, or a lower compression"):
        build_lookup(spec_from_mapping({"strategy": "mixed_dim", "compression": 10}), statistics)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "exactly one of compression, bytes or base_dim"),
        ({"base_dim": 4, "compression": 2}, "exactly one of compression, bytes or base_dim"),
        ({"base_dim": 4, "min_dim": 2}, "min_dim must be a positive multiple of 4"),
        ({"base_dim": 4, "rows_factor": 0.5}, "1 with index = 'vocabulary'"),
        ({"base_dim": 4, "by": "size"}, "one of 'cardinality', 'popularity'"),
    ],
)
def test_bad_mixed_dim_specs_are_explained(values, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_mapping({"strategy": "mixed_dim", **values})
