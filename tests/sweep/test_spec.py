"""Experiment files: checked with errors that name the file and key, expanded into the grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import ConfigError
from recsys.sweep.spec import configurations, load_experiment

GRID = """
[data]
synthetic_rows = 1000
[grid]
models = ["dlrm", "fm"]
strategies = ["full", "hashing", "mixed_dim"]
compressions = [2, 10]
seeds = [0, 1]
[train]
epochs = 2
[tables.hashing]
hash_functions = 2
[tables."mixed_dim@10"]
index = "hash"
rows_factor = 0.35
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_the_grid_expands_with_full_once_per_model_and_seed(tmp_path):
    experiment = load_experiment(write(tmp_path, GRID))
    found = configurations(experiment)
    assert experiment.name == "grid"
    assert len(found) == 2 * 2 * (1 + 2 * 2)  # models x seeds x (full + 2 strategies x 2 budgets)
    labels = {configuration.label for configuration in found}
    assert "dlrm/full/seed0" in labels and "fm/mixed_dim-10x/seed1" in labels
    by_label = {configuration.label: configuration for configuration in found}
    assert by_label["dlrm/hashing-2x/seed0"].spec.hash_functions == 2
    assert by_label["dlrm/mixed_dim-10x/seed0"].spec.rows_factor == 0.35
    assert by_label["dlrm/mixed_dim-2x/seed0"].spec.index == "vocabulary"  # the override is for 10x only
    assert by_label["dlrm/full/seed1"].train_config.epochs == 2
    assert by_label["dlrm/full/seed1"].train_config.seed == 1


def test_config_hash_names_the_resolved_configuration(tmp_path):
    experiment = load_experiment(write(tmp_path, GRID))
    hashes = [configuration.config_hash(experiment.data) for configuration in configurations(experiment)]
    assert len(set(hashes)) == len(hashes)
    again = [configuration.config_hash(experiment.data) for configuration in configurations(experiment)]
    assert again == hashes
    changed = load_experiment(write(tmp_path, GRID.replace("epochs = 2", "epochs = 3")))
    assert not set(hashes) & {item.config_hash(changed.data) for item in configurations(changed)}


def test_runs_from_before_the_plateau_cut_became_the_default_are_not_taken_as_finished(tmp_path):
    """Under patience an unset lr_decay now means /10 on a plateau: such a cell hashes as lr_decay = 0.1
    does, not as the constant rates it meant before (which keep their old hash, with lr_decay = 1.0 or
    without patience)."""

    def first_hash(train: str) -> str:
        experiment = load_experiment(write(tmp_path, GRID.replace("epochs = 2", train)))
        return configurations(experiment)[0].config_hash(experiment.data)

    implied = first_hash("epochs = 2\npatience = 2")
    assert implied == first_hash("epochs = 2\npatience = 2\nlr_decay = 0.1")
    assert implied != first_hash("epochs = 2\npatience = 2\nlr_decay = 1.0")
    assert first_hash("epochs = 2") != first_hash("epochs = 2\nlr_decay = 1.0")  # no patience: unchanged meaning


@pytest.mark.parametrize(
    "change, message",
    [
        (("[train]", "[training]"), "unknown section.*training"),
        (("epochs = 2", "epochs = 2\nwarmup = 3"), r"\[train\].*unknown key 'warmup'"),
        (('models = ["dlrm", "fm"]', 'models = ["dlrm", "xgboost"]'), "unknown model xgboost"),
        (("synthetic_rows = 1000", 'synthetic_rows = 1000\nprepared = "cache"'), "exactly one of"),
        (("rows_factor = 0.35", "rows_factor = 0.35\ncolour = 1"), "mixed_dim.*unknown key 'colour'"),
        (("synthetic_rows = 1000", "synthetic_rows = 1000\nshuffle = -1"), "shuffle: the seed must be"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path, change, message):
    path = write(tmp_path, GRID.replace(*change))
    with pytest.raises(ConfigError, match=message) as error:
        configurations(load_experiment(path))
    assert "grid" in str(error.value)


def test_shipped_experiments_are_valid():
    for path in sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml")):
        assert configurations(load_experiment(path)), path


def test_scalar_table_keys_apply_to_every_strategy_and_formats_are_checked(tmp_path):
    common = GRID.replace("[tables.hashing]", "[tables]\ninit_std = 0.01\n\n[tables.hashing]")
    found = configurations(load_experiment(write(tmp_path, common)))
    assert {configuration.spec.init_std for configuration in found} == {0.01}
    raw = tmp_path / "ratings"
    for text, message in (
        ('[data]\nraw = ["ratings"]\nformat = "parquet"\n', "unknown format 'parquet'"),
        ('[data]\nsynthetic_rows = 10\nformat = "avazu"\n', "format = 'avazu' describes raw files"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_experiment(write(tmp_path, text))
    experiment = load_experiment(write(tmp_path, '[data]\nraw = ["ratings"]\nformat = "movielens"\n'))
    assert experiment.data.format == "movielens" and experiment.data.raw == (str(raw),)


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_every_shipped_experiment_loads_and_expands(path):
    experiment = load_experiment(path)
    assert experiment.name == path.stem
    assert configurations(experiment)
