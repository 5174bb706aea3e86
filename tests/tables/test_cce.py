"""CCE: both columns hashed until the first clustering; then every clustered id's column-0 row is
the centroid nearest its old vector (checked by distances computed here), the vectors of a feature
with a row per clustered id do not move, ids outside the clustered set stay hashed, the budget
splits into slots and rows, and spec errors name the option."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics, RecordingStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from tests.tables.conftest import FEATURES, single_id_batch


def cce_spec(**options):
    return spec_from_mapping({"strategy": "cce", "embedding_dim": 16, **options})


def table(lookup, feature):
    return lookup.storage.embedding_bags[f"cce_{feature}"].weight.detach().clone()


def vectors_of(lookup, feature, ids):
    batch = single_id_batch(np.stack([ids] * len(FEATURES), axis=1))
    return lookup(batch).to_dict()[feature].detach()


def test_before_clustering_a_vector_is_two_hashed_rows(statistics):
    lookup = build_lookup(cce_spec(compression=100, seed=2), statistics)
    rows = lookup.plans["huge"].rows
    weights = table(lookup, "huge")
    ids = np.array([7, -3, 2**50, 999_999])
    expected = [
        weights[hash_ids(torch.tensor([i]), derive_salt(2, feature_key("huge"), 0), rows)]
        + weights[rows + hash_ids(torch.tensor([i]), derive_salt(2, feature_key("huge"), 1), rows)]
        for i in ids
    ]
    torch.testing.assert_close(vectors_of(lookup, "huge", ids), torch.cat(expected))


def test_clustered_ids_take_the_centroid_nearest_their_old_vector(statistics):
    lookup = build_lookup(cce_spec(compression=100, iterations=5), statistics)
    plan = lookup.plans["huge"]
    assert 0 < plan.rows < plan.clustered  # k-means, not one row per id
    ids = lookup.clustered_ids("huge")[:500].numpy()
    before = vectors_of(lookup, "huge", ids)
    assert lookup.after_step(0.3)["cce/clusterings"] == 1
    weights = table(lookup, "huge")
    first, _ = lookup.column_rows("huge", torch.from_numpy(ids))
    nearest = torch.cdist(before, weights[: plan.rows]).argmin(dim=1)
    agree = (first == nearest).float().mean()
    assert agree > 0.99, agree  # ties and float order aside, the nearest centroid
    after = vectors_of(lookup, "huge", ids)  # centroid plus column 1's mean residual: closer than the centroid
    assert (after - before).norm(dim=1).mean() < 0.9 * (weights[first] - before).norm(dim=1).mean()
    assert lookup.after_step(0.4) == {}  # the next clustering waits for 0.5


def test_a_row_per_clustered_id_leaves_their_vectors_where_they_were():
    ids = np.repeat(np.arange(300), np.arange(300, 0, -1))
    statistics = FeatureStatistics.from_ids({"a": ids, "b": ids % 7})
    lookup = build_lookup(cce_spec(rows=400), statistics)
    assert lookup.plans["a"].clustered == 300
    probe = np.arange(300)
    batch = KeyedJaggedTensor(
        keys=["a", "b"], values=torch.from_numpy(np.concatenate([probe, probe % 7])), lengths=torch.ones(600).int()
    )
    before = lookup(batch).to_dict()["a"].detach()
    lookup.after_step(1.0)
    torch.testing.assert_close(lookup(batch).to_dict()["a"].detach(), before)
    first, _ = lookup.column_rows("a", torch.from_numpy(probe))
    assert sorted(first.tolist()) == list(range(300))  # each its own row


def test_building_asks_for_no_frequencies_so_artifacts_do_not_carry_them(statistics):
    recording = RecordingStatistics(statistics)
    lookup = build_lookup(cce_spec(compression=100), recording)
    assert recording.asked_frequencies == {}
    lookup.after_step(0.3)  # clustering reads the most frequent ids
    assert set(recording.asked_frequencies) == {feature for feature, plan in lookup.plans.items() if plan.clustered}


def test_the_budget_splits_into_slots_and_rows(statistics):
    full = sum((count + 1) * 16 * 4 for count in statistics.cardinalities.values())
    lookup = build_lookup(cce_spec(compression=100, index_share=0.5), statistics)
    report = lookup.memory_report()
    slots = lookup.assignments.get_buffer(lookup.slot_name("huge"))
    assert lookup.plans["huge"].rows <= 256 and slots.element_size() == 1  # a row number fits one byte
    plan = lookup.plans["huge"]
    assert plan.clustered < statistics.cardinalities["huge"]  # so its index takes its whole part
    row_bytes = 2 * plan.rows * 16 * 4
    assert 0.45 < slots.numel() / (slots.numel() + row_bytes) < 0.52  # rows round down
    assert 0.9 * full / 100 <= report.total_bytes <= full / 100


@pytest.mark.parametrize(
    "options, message",
    [
        ({"compression": 10, "index_share": 1.0}, "index_share must be in"),
        ({"compression": 10, "cluster_at": [0.5, 0.2]}, "cluster_at must be increasing"),
        ({"compression": 10, "iterations": 0}, "iterations and points_per_centroid must be at least 1"),
    ],
)
def test_bad_specs_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        cce_spec(**options)
