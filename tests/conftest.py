"""Shared fixtures: small synthetic data made once per session, the real Criteo sample when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.quiet import quiet_libraries

quiet_libraries()

from recsys.data.cache import PreparedCache  # noqa: E402
from recsys.data.prepare import PrepareOptions, prepare  # noqa: E402
from recsys.data.synth import SynthConfig, write_synthetic  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRITEO_SAMPLE = SHARED_DATA / "criteo" / "train_8k.tsv"
SYNTHETIC = SynthConfig(rows=40_000, cardinality_scale=0.002, seed=3)


@pytest.fixture(scope="session")
def criteo_sample() -> Path:
    if not CRITEO_SAMPLE.exists():
        pytest.skip(f"real Criteo sample {CRITEO_SAMPLE} is absent")
    return CRITEO_SAMPLE


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synthetic") / "synthetic.tsv"
    write_synthetic(SYNTHETIC, path)
    return path


@pytest.fixture(scope="session")
def synthetic_cache(synthetic_file, tmp_path_factory) -> PreparedCache:
    return prepare([synthetic_file], tmp_path_factory.mktemp("cache") / "cache", PrepareOptions())
