"""The synthetic generator: deterministic, Criteo-shaped, readable by the reader, with a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.bad_rows import BadRowTally
from recsys.data.criteo import read_criteo
from recsys.data.synth import (
    CRITEO_KAGGLE_CARDINALITIES,
    PlantedModel,
    SynthConfig,
    generate_blocks,
    hex_strings,
    write_synthetic,
)
from recsys.train.metrics import roc_auc
from tests.conftest import SYNTHETIC


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    paths = [tmp_path / name for name in ("a.tsv", "b.tsv", "c.tsv")]
    for path, seed in zip(paths, (1, 1, 2)):
        write_synthetic(SynthConfig(rows=3000, cardinality_scale=0.001, seed=seed), path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_gzip_output_is_the_same_data(tmp_path):
    config = SynthConfig(rows=2000, cardinality_scale=0.001)
    write_synthetic(config, tmp_path / "plain.tsv")
    write_synthetic(config, tmp_path / "packed.tsv.gz")
    frames = [next(read_criteo([tmp_path / name], BadRowTally()))[0] for name in ("plain.tsv", "packed.tsv.gz")]
    assert frames[0].equals(frames[1])


def test_rows_follow_the_criteo_profile(synthetic_cache):
    cardinalities = synthetic_cache.meta["cardinalities"]
    observed = np.array([cardinalities[f"C{index}"] for index in range(1, 27)])
    configured = np.array(SYNTHETIC.cardinalities())
    profile = np.array(CRITEO_KAGGLE_CARDINALITIES)
    # the biggest Criteo features are the biggest here too, and no feature exceeds its vocabulary
    assert set(np.argsort(observed)[-4:]) == set(np.argsort(profile)[-4:])
    assert np.all(observed <= configured + 1)  # + 1: the missing value is a category of its own
    assert np.all(observed >= 2)
    ids, counts = synthetic_cache.statistics().frequencies("C3")
    assert counts[0] > 50 * np.median(counts)  # Zipf-like: a heavy head and a long tail


def test_click_rate_and_planted_signal():
    config = SynthConfig(rows=20_000, cardinality_scale=0.01, seed=5, click_rate=0.3)
    model = PlantedModel(config)
    dense, ranks, missing = model.sample_features(np.random.default_rng(0), 20_000)
    logits = model.logits(dense, ranks, missing)
    labels = np.random.default_rng(1).random(20_000) < 1 / (1 + np.exp(-logits))
    assert labels.mean() == pytest.approx(0.3, abs=0.02)
    assert roc_auc(logits, labels) > 0.75


@pytest.mark.parametrize("bad", [dict(rows=0), dict(rows=10, cardinality_scale=0), dict(rows=10, zipf_exponent=1.0)])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_ids_are_written_as_eight_lowercase_hex_digits():
    ids = np.array([0, 1, 0xABCDEF01, 0xFFFFFFFF, 0x00100000, 305419896], dtype=np.uint32)
    missing = np.array([False, False, False, False, True, False])
    written = hex_strings(ids, missing).to_list()
    assert written == [format(int(value), "08x") if not gone else None for value, gone in zip(ids, missing)]


def test_vocabularies_grow_past_kaggle_up_to_the_id_space():
    config = SynthConfig(rows=20_000, cardinality_scale=100, seed=2)
    cardinalities = config.cardinalities()
    assert cardinalities[2] == 1_013_122_700 and cardinalities[8] == 300  # C3 x 100; C9 (3 values) x 100
    _, ranks, _ = PlantedModel(config).sample_features(np.random.default_rng(0), 20_000)
    assert ranks[:, 2].max() > CRITEO_KAGGLE_CARDINALITIES[2]  # the Zipf tail reaches past Kaggle's C3
    grown = next(generate_blocks(config, block_rows=20_000))["C3"].drop_nulls()
    assert grown.str.len_chars().eq(8).all()
    with pytest.raises(ValueError, match="more than the 4,294,967,296 8-hex-digit ids; use at most 423"):
        SynthConfig(rows=10, cardinality_scale=500)
