"""DHE: an id's code is its k hashes scaled to [-1, 1] (checked against hashes computed by hand in
Python integers), the decoder is as wide as the budget allows, its memory does not grow with the
vocabulary, and spec errors name the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.hashes import NON_NEGATIVE, as_int64, derive_salt, feature_key, mix64_int
from tests.tables.conftest import FEATURES, single_id_batch


def dhe_spec(**options):
    return spec_from_mapping({"strategy": "dhe", "embedding_dim": 16, "hashes": 8, "layers": 2, **options})


def test_the_code_is_each_hash_bucket_scaled_to_minus_one_one(statistics):
    lookup = build_lookup(dhe_spec(compression=100, buckets=1000, seed=4), statistics)
    ids = torch.tensor([0, 977, -5, 2**62])
    code = lookup.code("large", ids)
    for row, identifier in enumerate(ids.tolist()):
        for function in range(8):
            salt = derive_salt(4, feature_key("large"), function)
            bucket = (as_int64(mix64_int(identifier ^ salt)) & NON_NEGATIVE) % 1000
            assert code[row, function].item() == pytest.approx(bucket / 999 * 2 - 1, abs=1e-6)
    assert code.min() >= -1 and code.max() <= 1


def test_the_decoder_is_the_widest_within_the_budget(statistics):
    full = sum((count + 1) * 16 * 4 for count in statistics.cardinalities.values())
    lookup = build_lookup(dhe_spec(compression=100), statistics)
    width = lookup.width

    def floats(width):  # Linear(8, w), LayerNorm, Linear(w, w), LayerNorm, Linear(w, 16), with biases
        return 8 * width + width + 2 * width + width * width + width + 2 * width + width * 16 + 16

    assert sum(parameter.numel() for parameter in lookup.parameters()) == floats(width)
    assert floats(width) * 4 <= full / 100 < floats(width + 1) * 4
    assert lookup.memory_report().total_bytes == floats(width) * 4


def test_memory_does_not_grow_with_the_vocabulary():
    small = FeatureStatistics.from_ids({"a": np.arange(1000), "b": np.arange(1000)})
    large = FeatureStatistics.from_ids({"a": np.arange(100_000), "b": np.arange(1000)})
    sizes = [
        build_lookup(dhe_spec(bytes=20_000), statistics).memory_report().total_bytes for statistics in (small, large)
    ]
    assert sizes[0] == sizes[1] <= 20_000


def test_distinct_ids_get_distinct_vectors_and_features_differ(statistics):
    lookup = build_lookup(dhe_spec(compression=10), statistics)
    ids = np.array([[value] * len(FEATURES) for value in range(50)])
    vectors = lookup(single_id_batch(ids)).values().detach().view(50, len(FEATURES), 16)
    distances = torch.cdist(vectors[:, 0], vectors[:, 0])
    assert (distances + torch.eye(50)).min() > 0
    assert not torch.allclose(vectors[:, 0], vectors[:, 1])  # the same id in two features: salted apart


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rows": 100}, "dhe has no table rows: give its budget as compression or bytes"),
        ({"compression": 10, "hashes": 0}, "hashes must be at least 1"),
        ({"compression": 10, "buckets": 1}, "buckets must be at least 2"),
    ],
)
def test_bad_specs_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        dhe_spec(**options)


def test_a_budget_below_the_smallest_decoder_says_what_it_needs(statistics):
    with pytest.raises(ValueError, match=r"dhe needs at least \d+ bytes"):
        build_lookup(dhe_spec(bytes=100), statistics)
