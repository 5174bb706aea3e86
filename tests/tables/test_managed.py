"""Managed tables: every id shares the last row until a window closes; then the ids counted at least
`admit_count` times own rows (the most frequent first when rows are short), their rows start at zero,
evaluation never changes the state, and the state travels in the state dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping

STATISTICS = FeatureStatistics.from_ids({"a": np.arange(10_000), "b": np.arange(10_000)})


def managed_spec(**options):
    return spec_from_mapping({"strategy": "managed", "embedding_dim": 16, "rows": 6, **options})


def batch(ids: list[int]) -> KeyedJaggedTensor:
    values = torch.tensor(ids + ids, dtype=torch.int64)
    return KeyedJaggedTensor(keys=["a", "b"], values=values, lengths=torch.ones(len(values), dtype=torch.int32))


def rows_of(lookup, ids: list[int]) -> list[int]:
    return lookup.managed_rows("a", torch.tensor(ids), torch.ones(len(ids), dtype=torch.int32)).tolist()


def test_ids_share_the_last_row_until_a_window_closes():
    lookup = build_lookup(managed_spec(eviction_interval=3), STATISTICS).eval()
    assert rows_of(lookup, [1, 2, 3, -7, 2**62]) == [5] * 5


def test_ids_counted_often_enough_own_rows_that_start_at_zero():
    lookup = build_lookup(managed_spec(eviction_interval=2, admit_count=2), STATISTICS)
    lookup.train()
    lookup(batch([10, 11, 12, 12]))
    lookup(batch([10, 13, 14, 15]))  # window closes: 10 and 12 seen twice, the others once
    lookup.eval()
    own = rows_of(lookup, [10, 12])
    assert len(set(own)) == 2 and 5 not in own
    assert rows_of(lookup, [11, 13, 14, 15, 99]) == [5] * 5
    table = lookup.storage.embedding_bags["managed_a"].weight.detach()
    assert table[own].abs().sum() == 0
    assert lookup.after_step(0.5)["managed/rows_owned"] == pytest.approx(2 / 5)  # all rows but the shared one
    assert lookup.after_step(0.6) == {}  # until the next window closes


def test_the_most_frequent_ids_win_when_rows_are_short():
    lookup = build_lookup(managed_spec(eviction_interval=1), STATISTICS).train()
    lookup(batch([1] * 5 + [2] * 4 + [3] * 3 + [4] * 2 + [5] * 2 + [6] * 2 + [7]))
    lookup.eval()
    assert 5 not in rows_of(lookup, [1, 2, 3])
    assert sum(row != 5 for row in rows_of(lookup, [1, 2, 3, 4, 5, 6, 7])) == 5  # five rows of six own ids
    assert rows_of(lookup, [7]) == [5]


def test_evaluation_leaves_the_state_alone_and_the_state_dict_carries_it():
    lookup = build_lookup(managed_spec(eviction_interval=1), STATISTICS).train()
    lookup(batch([4, 4, 8]))
    lookup.eval()
    before = rows_of(lookup, [4, 8, 9])
    for _ in range(3):
        lookup(batch([9, 9, 9]))
    assert rows_of(lookup, [4, 8, 9]) == before and before[2] == 5
    fresh = build_lookup(managed_spec(eviction_interval=1), STATISTICS)
    fresh.load_state_dict(lookup.state_dict())
    assert rows_of(fresh.eval(), [4, 8, 9]) == before


@pytest.mark.parametrize(
    "options, message",
    [
        ({"eviction": "fifo"}, "eviction"),
        ({"admit_count": 0}, "admit_count and eviction_interval must be at least 1"),
        ({"rows": 1}, "managed tables need rows of at least 2"),
    ],
)
def test_bad_specs_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        managed_spec(**options)


def test_a_budget_below_two_rows_says_what_it_needs():
    with pytest.raises(ValueError, match=r"managed needs at least \d+ bytes"):
        build_lookup(spec_from_mapping({"strategy": "managed", "bytes": 100}), STATISTICS)
