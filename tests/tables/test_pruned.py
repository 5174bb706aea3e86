"""`pruned`: soft thresholds, the schedule to the budget, which rows go, and compaction."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.pruned import CompactPrunedLookup, kept_ids_for_budget, scheduled_kept
from recsys.train.distributed import ensure_process_group, shard_model
from tests.tables.conftest import FEATURES, single_id_batch, training_ids


def make_spec(**values):
    return spec_from_mapping({"strategy": "pruned", "compression": 10, **values})


def set_table(lookup, feature: str, weights: torch.Tensor) -> None:
    with torch.no_grad():
        lookup.storage.embedding_bags[f"pruned_{feature}"].weight.copy_(weights)


def vocabulary(lookup, feature: str) -> np.ndarray:
    start, end = lookup.vocabularies.spans[feature]
    return lookup.vocabularies.ids[start:end].numpy()


def test_soft_threshold_zeroes_small_weights_and_shrinks_the_rest(statistics):
    lookup = build_lookup(make_spec(threshold="dimension", threshold_init=0.0), statistics)
    level = 0.5  # sigmoid(0)
    vectors = torch.tensor([[0.2, -0.4, 0.9, -1.5] * 4])
    expected = torch.tensor([[0.0, 0.0, 0.9 - level, -(1.5 - level)] * 4])
    torch.testing.assert_close(lookup.soft_threshold(vectors, 0), expected)
    with torch.no_grad():
        lookup.threshold[0, :4] = torch.logit(torch.tensor(0.95))
    assert lookup.soft_threshold(vectors, 0)[0, 2] == 0  # 0.9 is now below its column's level


def test_threshold_learns_from_the_loss(statistics):
    lookup = build_lookup(make_spec(threshold="feature", threshold_init=-8.0), statistics)
    ids = np.stack([training_ids(1)[feature][:64] for feature in FEATURES], axis=1)
    lookup(single_id_batch(ids)).values().pow(2).sum().backward()
    assert lookup.threshold.grad is not None
    assert (lookup.threshold.grad != 0).all()


def test_budget_fits_the_compact_form_and_one_more_id_would_not():
    budget, features, dim = 100_000, 26, 16
    kept = kept_ids_for_budget(budget, features, dim, vocabulary_ids=10**9)

    def compact_bytes(ids):
        return (ids + features) * dim * 4 + ids * 8

    assert compact_bytes(kept) <= budget < compact_bytes(kept + 1)
    assert kept_ids_for_budget(budget, features, dim, vocabulary_ids=10) == 10
    with pytest.raises(ValueError, match="out-of-vocabulary rows"):
        kept_ids_for_budget(100, features, dim, vocabulary_ids=10)


def test_schedule_falls_to_the_target_in_steps():
    spec = make_spec(prune_start=0.2, prune_end=0.6, updates=4)
    everything, target = 10_000, 500
    progress = np.linspace(0, 1, 1001)
    counts = [scheduled_kept(value, spec, everything, target) for value in progress]
    assert counts[0] == everything and all(count == everything for count, p in zip(counts, progress) if p < 0.2)
    assert all(later <= earlier for earlier, later in zip(counts, counts[1:]))
    assert all(count == target for count, p in zip(counts, progress) if p >= 0.6)
    assert len(set(counts)) == 5  # the start, three steps on the way, the target
    halfway = scheduled_kept(0.4, spec, everything, target)
    assert halfway == target + round((everything - target) * 0.5**3)


def test_pruning_keeps_the_largest_rows_and_never_brings_one_back(statistics):
    lookup = build_lookup(make_spec(threshold="none"), statistics)
    rows = lookup.vocabularies.size("huge") + 1
    norms = torch.arange(rows, dtype=torch.float32).unsqueeze(1).expand(rows, 16) / rows
    for feature in FEATURES:
        set_table(lookup, feature, torch.zeros(lookup.vocabularies.size(feature) + 1, 16))
    set_table(lookup, "huge", norms)
    lookup.prune_to(1000)
    start = lookup.row_starts["huge"]
    kept = torch.nonzero(lookup.kept[start : start + rows]).squeeze(1)
    assert lookup.kept_ids() == 1000
    assert kept.tolist() == list(range(rows - 1001, rows))  # the 1000 largest id rows and the oov row
    set_table(lookup, "huge", norms.flip(0))  # the pruned rows are now the largest
    lookup.prune_to(500)
    assert lookup.kept_ids() == 500
    now_kept = torch.nonzero(lookup.kept[start : start + rows]).squeeze(1)
    assert set(now_kept.tolist()) <= set(kept.tolist())


def test_a_pruned_id_takes_the_out_of_vocabulary_row(statistics):
    lookup = build_lookup(make_spec(), statistics)
    ids = vocabulary(lookup, "huge")
    lookup.prune_to(0)
    pruned = lookup(single_id_batch(np.array([[ids[0]] * 4, [ids[-1]] * 4]))).to_dict()["huge"]
    unseen = lookup(single_id_batch(np.array([[-12345] * 4]))).to_dict()["huge"]
    torch.testing.assert_close(pruned, unseen.expand(2, -1))


def test_compact_gives_exactly_the_masked_forward(statistics):
    torch.manual_seed(3)
    lookup = build_lookup(make_spec(threshold="dimension", threshold_init=-5.0), statistics)
    with torch.no_grad():
        lookup.threshold.uniform_(-6.0, -4.0)  # levels around the weights' scale: many zeros
    lookup.after_step(0.4)  # part of the way, so compact() has to finish the schedule
    assert lookup.kept_ids() > lookup.target
    compact = lookup.compact()
    assert isinstance(compact, CompactPrunedLookup) and lookup.kept_ids() == lookup.target
    frequent = np.stack([np.resize(statistics.frequencies(feature)[0], 300) for feature in FEATURES], axis=1)
    batches = [single_id_batch(frequent), bags_of_several_ids(frequent)]
    with torch.no_grad():
        for batch in batches:
            torch.testing.assert_close(compact(batch).values(), lookup(batch).values(), rtol=0, atol=1e-6)
    assert compact.memory_report().total_bytes <= compact.full_bytes / 10


def bags_of_several_ids(ids: np.ndarray) -> KeyedJaggedTensor:
    """Bags of 3 ids each, with an unseen id in every bag."""
    rows = ids.shape[0] // 3
    values = []
    for column in range(len(FEATURES)):
        bags = ids[: rows * 3, column].reshape(rows, 3).copy()
        bags[:, 1] = -99
        values.append(bags.reshape(-1))
    return KeyedJaggedTensor(
        keys=list(FEATURES),
        values=torch.as_tensor(np.concatenate(values), dtype=torch.int64),
        lengths=torch.full((rows * len(FEATURES),), 3, dtype=torch.int32),
    )


def test_sharded_storage_scores_rows_as_the_plain_one_does(statistics):
    ensure_process_group()
    lookup = build_lookup(make_spec(threshold="dimension", threshold_init=-6.0), statistics)
    reference = copy.deepcopy(lookup)
    sharded = shard_model(lookup, sparse_learning_rate=0.05)
    torch.testing.assert_close(sharded.module.row_scores(), reference.row_scores())


@pytest.mark.parametrize(
    "values, message",
    [
        ({"rows": 100, "compression": None}, "not rows"),
        ({"prune_start": 0.8, "prune_end": 0.5}, "prune_start <= prune_end"),
        ({"updates": 0}, "updates"),
        ({"threshold": "row"}, "threshold"),
    ],
)
def test_bad_specs_are_refused(values, message):
    mapping = {"strategy": "pruned", "compression": 10, **values}
    with pytest.raises(ConfigError, match=message):
        spec_from_mapping({key: value for key, value in mapping.items() if value is not None})
