"""`optembed`: the straight-through row mask, the thresholds' regulariser, rows within the budget,
the evolutionary search, the supernet's widths, and the compact form after a search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables.optembed import (
    EvolutionarySearch,
    StraightThroughStep,
    ThresholdRegulariser,
    rows_within_budget,
    width_choices,
)
from tests.tables.conftest import FEATURES, single_id_batch, training_ids


def make_spec(**values):
    return spec_from_mapping({"strategy": "optembed", "compression": 10, **values})


def seen_batch(statistics, rows: int = 32):
    ids = np.stack([np.resize(statistics.frequencies(feature)[0], rows) for feature in FEATURES], axis=1)
    return single_id_batch(ids)


def test_step_is_a_hard_mask_whose_gradient_passes_straight_through():
    margins = torch.tensor([-0.5, 0.0, 0.25, 3.0], requires_grad=True)
    mask = StraightThroughStep.apply(margins)
    assert mask.tolist() == [0.0, 0.0, 1.0, 1.0]
    (mask * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert margins.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_regulariser_adds_the_gradient_of_decay_times_exp_minus_threshold():
    thresholds = torch.tensor([0.0, 1.0], requires_grad=True)
    (ThresholdRegulariser.apply(thresholds, 0.5) * torch.tensor([2.0, 3.0])).sum().backward()
    expected = [2.0 - 0.5 * 1.0, 3.0 - 0.5 * float(np.exp(-1.0))]
    np.testing.assert_allclose(thresholds.grad.numpy(), expected, rtol=1e-6)


def test_rows_within_budget_cut_every_field_by_the_same_fraction():
    margins = torch.tensor([0.3, -0.1, 0.9, 0.5, 0.2, 0.01, 0.02, 5.0])
    fields = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    always = torch.tensor([False] * 7 + [True])  # the last row: field 1's out-of-vocabulary row
    costs = torch.tensor([10, 100])
    # field 0 keeps rows 2, 3, 0, 4 (margin order; row 1 is below its threshold), field 1 rows 6, 5
    everything = [True, False, True, True, True, True, True, True]
    assert rows_within_budget(margins, fields, costs, 240, always).tolist() == everything
    # 239 bytes: q in (1/2, 3/4] gives ceil(4q) = 3 rows of field 0 and ceil(2q) = 2 of field 1: 30 + 200
    assert (
        rows_within_budget(margins, fields, costs, 239, always).tolist()
        == [True, False, True, True, False] + [True] * 3
    )
    # 129 bytes: q in (1/4, 1/2] gives 2 rows of field 0 and 1 of field 1: 20 + 100
    assert rows_within_budget(margins, fields, costs, 129, always).tolist() == [False, False, True, True, False] + [
        False,
        True,
        True,
    ]
    assert rows_within_budget(margins, fields, costs, 5, always).tolist() == [False] * 7 + [True]


def test_search_finds_the_best_widths_of_a_known_fitness():
    target = (12, 4, 16, 8, 4, 16)
    spec = make_spec(population=16, parents=6, generations=15, mutation_probability=0.3)
    evaluated = []

    def fitness(widths):
        evaluated.append(widths)
        return -sum(abs(width - wanted) for width, wanted in zip(widths, target))

    best, score = EvolutionarySearch(width_choices(16), len(target), spec).run(fitness)
    assert best == target and score == 0
    assert len(evaluated) == len(set(evaluated))  # every candidate scored once
    assert all(set(widths) <= {4, 8, 12, 16} for widths in evaluated)


def test_spec_errors_name_the_option():
    for values, option in (
        ({"rows": 100, "compression": None}, "compression or bytes"),
        ({"supernet_end": 1.0}, "supernet_end"),
        ({"parents": 30}, "parents"),
        ({"mutation_probability": 2.0}, "mutation_probability"),
    ):
        with pytest.raises((ConfigError, ValueError), match=option):
            make_spec(**{key: value for key, value in values.items() if value is not None})


def test_rows_below_their_threshold_are_masked_and_thresholds_learn(statistics):
    lookup = build_lookup(make_spec(threshold_init=0.0), statistics)
    batch = seen_batch(statistics)
    with torch.no_grad():
        lookup.threshold[FEATURES.index("large")] = 1e6  # no row of 'large' is that large
    vectors = lookup(batch).to_dict()
    assert vectors["large"].abs().sum() == 0 and vectors["medium"].abs().sum() > 0
    direction = torch.randn(16, generator=torch.Generator().manual_seed(0))
    sum((vector * direction).sum() for vector in vectors.values()).backward()  # masked rows still pass a gradient
    assert lookup.threshold.grad is not None and (lookup.threshold.grad != 0).all()


def test_supernet_draws_widths_after_each_step_and_zeroes_the_columns_past_them(statistics):
    lookup = build_lookup(make_spec(threshold_init=-1.0), statistics)
    batch = seen_batch(statistics)
    seen = set()
    for _ in range(30):
        lookup.after_step(0.1)
        drawn = lookup.drawn.tolist()
        seen.update(drawn)
        vectors = lookup(batch).values().view(-1, len(FEATURES), 16)
        for field, width in enumerate(drawn):
            assert vectors[:, field, width:].abs().sum() == 0 and vectors[:, field, :width].abs().sum() > 0
    assert seen == {4, 8, 12, 16}
    lookup.eval()
    assert lookup(batch).values().view(-1, len(FEATURES), 16)[:, :, 12:].abs().sum() > 0  # evaluation: full width


def test_search_keeps_the_budget_and_the_compact_form_serves_what_was_chosen(statistics):
    lookup = build_lookup(make_spec(generations=3, population=8, parents=4, threshold_init=-1.0), statistics)
    wanted = (8, 16, 4, 4)

    def validation_auc() -> float:  # stands in for the model's validation AUC: prefers `wanted`
        return -float(sum(abs(width - goal) for width, goal in zip(lookup.widths.tolist(), wanted)))

    assert lookup.after_epoch(0.4, validation_auc) == {}  # still training the supernet
    assert not lookup.settled(0.4)
    metrics = lookup.after_epoch(0.5, validation_auc)
    assert lookup.settled(0.5) and lookup.after_epoch(0.9, validation_auc) == {}
    chosen = tuple(int(metrics[f"optembed/width/{feature}"]) for feature in FEATURES)
    assert chosen == tuple(lookup.widths.tolist()) and metrics["optembed/search_val_auc"] == validation_auc()
    kept = {feature: int(metrics[f"optembed/kept/{feature}"]) for feature in FEATURES}
    total = sum((kept[feature] + 1) * width * 4 + kept[feature] * 8 for feature, width in zip(FEATURES, chosen))
    assert total <= lookup.full_bytes / 10
    assert lookup.memory_report().total_bytes == total
    lookup.eval()
    ids = np.stack([training_ids(3)[feature][:50] for feature in FEATURES], axis=1)
    ids[:5] = np.array([-(2**63), 2**63 - 1, 0, -1, 123456789])[:, None]  # unseen: out-of-vocabulary rows
    served = lookup.compact()
    assert dict(served.widths) == dict(zip(FEATURES, chosen))
    with torch.no_grad():
        torch.testing.assert_close(served(single_id_batch(ids)).values(), lookup(single_id_batch(ids)).values())
    stored = sum(table.numel() * 4 for table in served.storage.parameters()) + served.index_bytes()
    assert stored == total
