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
