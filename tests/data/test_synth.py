"""The synthetic generator: deterministic, Criteo-shaped, readable by the reader, with a learnable signal."""

from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest

from recsys.data.bad_rows import BadRowTally
from recsys.data.criteo import read_criteo
from recsys.data.synth import (
    CRITEO_KAGGLE_CARDINALITIES,
    MLPERF_CAP,
    EffectTables,
    PlantedModel,
    SynthConfig,
    block_frame,
    hex_strings,
    integer_column,
)
from recsys.data.synth_files import day_paths, write_synthetic
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
    model = PlantedModel(config)
    grown = block_frame(model, EffectTables(model, day=0, head_rows=1000), 0, 20_000)["C3"].drop_nulls()
    assert grown.str.len_chars().eq(8).all()
    with pytest.raises(ValueError, match="more than the 4,294,967,296 8-hex-digit ids; use at most 423"):
        SynthConfig(rows=10, cardinality_scale=500)


def test_integer_columns_keep_whole_values_and_null_nans():
    values = np.array([3.0, np.nan, -1.0, 0.0, 2.0**40])
    assert integer_column(values).to_list() == [3, None, -1, 0, 2**40]


def test_tabulated_effects_equal_hashing_every_row():
    config = SynthConfig(rows=5000, cardinality_scale=0.01, seed=4, days=3, daily_churn=0.3)
    model = PlantedModel(config)
    dense, ranks, missing = model.sample_features(np.random.default_rng(2), 5000)
    for day in (0, 2):
        hashed = model.logits(dense, ranks, missing, EffectTables(model, day, head_rows=0))
        tabulated = model.logits(dense, ranks, missing, EffectTables(model, day, head_rows=300))
        np.testing.assert_array_equal(tabulated, hashed)  # the tables only save hashing: bit for bit


def test_workers_write_the_same_bytes_and_days_follow_the_name(tmp_path):
    config = SynthConfig(rows=12_000, cardinality_scale=0.002, days=2)
    alone = write_synthetic(config, tmp_path / "alone.tsv", block_rows=5000)
    shared = write_synthetic(config, tmp_path / "shared.tsv.gz", block_rows=5000, workers=2)
    assert [path.name for path in shared] == ["shared_0.tsv.gz", "shared_1.tsv.gz"]
    assert [path.read_bytes() for path in alone] == [gzip.decompress(path.read_bytes()) for path in shared]
    one_day = SynthConfig(rows=12_000, cardinality_scale=0.002)
    single_day = write_synthetic(one_day, tmp_path / "one.tsv", block_rows=5000)
    assert single_day[0].read_bytes() == alone[0].read_bytes()  # day 0 is the single-file data
    continued = write_synthetic(replace(config, days=1, first_day=1), tmp_path / "later.tsv", block_rows=5000)
    assert continued[0].name == "later_1.tsv" and continued[0].read_bytes() == alone[1].read_bytes()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted(  # no parts or partial files left behind
        ["alone_0.tsv", "alone_1.tsv", "shared_0.tsv.gz", "shared_1.tsv.gz", "one.tsv", "later_1.tsv"]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("day.tsv.gz", ["day_0.tsv.gz", "day_1.tsv.gz"]),
        ("rows.tsv", ["rows_0.tsv", "rows_1.tsv"]),
        ("log", ["log_0", "log_1"]),
    ],
)
def test_day_files_are_named_before_the_extension(tmp_path, name, expected):
    assert [path.name for path in day_paths(tmp_path / name, 2)] == expected


def test_each_day_a_share_of_the_ranks_passes_to_new_ids(tmp_path):
    churn = 0.2
    config = SynthConfig(rows=20_000, cardinality_scale=0.01, seed=6, days=2, daily_churn=churn)
    days = [next(read_criteo([path], BadRowTally()))[0] for path in write_synthetic(config, tmp_path / "day.tsv")]
    head = days[0]["C3"].drop_nulls().value_counts(sort=True)["C3"][:200].to_list()
    kept = len(set(head) & set(days[1]["C3"].to_list()))
    # each of the 200 most frequent values stays with probability 1 - churn (binomial: mean 160, sd 5.7)
    assert 200 * (1 - churn) - 20 < kept < 200 * (1 - churn) + 20
    assert days[1].height == days[0].height == 20_000


def test_the_terabyte_profile_capped_as_mlperf_caps_it():
    capped = SynthConfig(rows=10, profile="terabyte", cap=MLPERF_CAP).cardinalities()
    # MLPerf DLRM's num_embeddings_per_feature (torchrec's examples/dlrm README), written out independently
    mlperf = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209, 11938,
              155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]  # fmt: skip
    assert capped == mlperf and sum(capped) == 204_184_588
    assert max(SynthConfig(rows=10, profile="terabyte").cardinalities()) == 292_775_614  # C20 uncapped
