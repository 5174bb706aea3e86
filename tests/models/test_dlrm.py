"""Models over every strategy: shapes, gradients into tables and MLPs, the interaction's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.models import MODELS, build_model
from recsys.models.dlrm import DotInteraction
from recsys.tables import build_lookup, spec_from_mapping
from tests.tables.conftest import FEATURES, single_id_batch, spec, statistics, training_ids  # noqa: F401


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_model_over_every_strategy(model_name, spec, statistics):  # noqa: F811
    torch.manual_seed(0)
    model = build_model(model_name, build_lookup(spec, statistics), dense_features=5, overrides={})
    ids = np.stack([training_ids(2)[name][:16] for name in FEATURES], axis=1)
    logits = model(torch.randn(16, 5), single_id_batch(ids))
    assert logits.shape == (16,)
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_dot_interaction_is_the_upper_triangle():
    vectors = torch.randn(3, 4, 5)
    interaction = DotInteraction(4)(vectors)
    expected = torch.stack(
        [torch.stack([vectors[b, i] @ vectors[b, j] for i in range(4) for j in range(i + 1, 4)]) for b in range(3)]
    )
    torch.testing.assert_close(interaction, expected)


def test_unknown_model_and_override(statistics):  # noqa: F811
    lookup = build_lookup(spec_from_mapping({"strategy": "full"}), statistics)
    with pytest.raises(ConfigError, match="unknown model 'dcn'"):
        build_model("dcn", lookup, 5)
    with pytest.raises(ConfigError, match="unknown key 'hidden'"):
        build_model("dlrm", lookup, 5, {"hidden": 3})
