"""Small statistics and batches for table tests, and the presets of `tables/` grouped by strategy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables import load_spec

PRESETS = sorted((Path(__file__).resolve().parents[2] / "tables").glob("*.toml"))
FEATURES = ("small", "medium", "large", "huge")


def training_ids(seed: int = 0) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(seed)
    sizes = {"small": 3, "medium": 60, "large": 3000, "huge": 200_000}
    return {name: generator.zipf(1.1, size=200_000) % size * 7919 - 5 for name, size in sizes.items()}


@pytest.fixture(scope="session")
def statistics() -> FeatureStatistics:
    return FeatureStatistics.from_ids(training_ids())


def single_id_batch(ids: np.ndarray) -> KeyedJaggedTensor:
    """A KJT of `ids` [B, F] (one id per row and feature), features named as in FEATURES."""
    rows, features = ids.shape
    return KeyedJaggedTensor(
        keys=list(FEATURES[:features]),
        values=torch.as_tensor(ids.T.reshape(-1), dtype=torch.int64),
        lengths=torch.ones(rows * features, dtype=torch.int32),
    )


def preset_ids() -> list[str]:
    return [path.stem for path in PRESETS]


@pytest.fixture(params=PRESETS, ids=preset_ids())
def spec(request):
    return load_spec(request.param)
