"""The prepared cache of an experiment: made from raw files of any format, reused while they stay the same."""

from __future__ import annotations

import os

from recsys.sweep.data import prepared_cache
from recsys.sweep.spec import DataSpec
from tests.conftest import write_movielens_like


def test_a_movielens_directory_is_prepared_once_and_again_when_a_file_changes(tmp_path):
    directory = write_movielens_like(tmp_path / "raw", ratings=300)
    data = DataSpec(raw=(str(directory),), format="movielens")
    first = prepared_cache(data, tmp_path / "caches")
    assert first.meta["format"] == "movielens" and "genres" in first.schema.sparse_features
    assert prepared_cache(data, tmp_path / "caches").path == first.path
    ratings = directory / "ratings.csv"
    os.utime(ratings, ns=(ratings.stat().st_atime_ns, ratings.stat().st_mtime_ns + 10**9))
    assert prepared_cache(data, tmp_path / "caches").path != first.path


def test_test_files_of_an_experiment_are_its_test_split_and_part_of_its_identity(synthetic_file, tmp_path):
    lines = synthetic_file.read_text().splitlines(keepends=True)
    inputs, held_out = tmp_path / "days.tsv", tmp_path / "next-day.tsv"
    inputs.write_text("".join(lines[:1000]))
    held_out.write_text("".join(lines[1000:1200]))
    plain = DataSpec(raw=(str(inputs),), split=(0.9, 0.1, 0.0))
    assert "test" not in plain.identity()  # experiments without test files keep their hashes
    data = DataSpec(raw=(str(inputs),), split=(0.9, 0.1, 0.0), test=(str(held_out),))
    cache = prepared_cache(data, tmp_path / "caches")
    assert cache.meta["splits"] == {"train": 900, "val": 100, "test": 200}
    assert prepared_cache(plain, tmp_path / "caches").path != cache.path
