"""Bounded-memory id counting: exact counts in the frequency order whatever the partitioning."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from recsys.data.counting import (
    estimated_distinct,
    merge_sorted_runs,
    partitions_for,
    write_frequencies,
)
from recsys.data.stats import write_statistics


def reference_frequencies(values) -> list[tuple[int, int]]:
    """(id, count) by counting in Python, most frequent first, ties by id."""
    return sorted(Counter(values).items(), key=lambda item: (-item[1], item[0]))


@pytest.fixture(scope="module")
def rows() -> pl.LazyFrame:
    generator = np.random.default_rng(11)
    single = generator.zipf(1.3, size=6000).astype(np.int64) * generator.choice([-1, 1], size=6000)
    bags = [generator.integers(0, 50, size=generator.integers(0, 4)).tolist() for _ in range(6000)]
    return pl.LazyFrame({"single": single, "bag": pl.Series(bags, dtype=pl.List(pl.Int64))})


@pytest.mark.parametrize("partitions", [1, 3, 7])
@pytest.mark.parametrize("feature", ["single", "bag"])
def test_counts_are_exact_and_in_order_whatever_the_partitions(rows, tmp_path, feature, partitions):
    output = tmp_path / f"{feature}.parquet"
    distinct = write_frequencies(rows, feature, output, partitions)
    column = rows.collect()[feature]
    values = column.explode().drop_nulls().to_list() if feature == "bag" else column.to_list()
    expected = reference_frequencies(values)
    written = pl.read_parquet(output)
    assert list(zip(written["id"].to_list(), written["count"].to_list())) == expected
    assert distinct == len(expected)
    assert [path.name for path in tmp_path.iterdir()] == [output.name]  # no spill file left


def test_merging_sorted_runs_a_few_rows_at_a_time(tmp_path):
    runs = {
        "a": [(7, 9), (1, 5), (4, 5), (2, 1), (9, 1)],
        "b": [(3, 9), (5, 5), (8, 2)],
        "c": [(6, 1)],
    }
    paths = []
    for name, pairs in runs.items():
        path = tmp_path / f"{name}.parquet"
        pl.DataFrame({"id": [pair[0] for pair in pairs], "count": [pair[1] for pair in pairs]}).write_parquet(path)
        paths.append(path)
    assert merge_sorted_runs(paths, tmp_path / "merged.parquet", chunk_rows=2) == 9
    merged = pl.read_parquet(tmp_path / "merged.parquet")
    # by count descending, then id: worked by hand
    assert merged["id"].to_list() == [3, 7, 1, 4, 5, 8, 2, 6, 9]
    assert merged["count"].to_list() == [9, 9, 5, 5, 5, 2, 1, 1, 1]


def test_partitions_hold_each_hash_table_within_the_memory():
    assert partitions_for(100_000_000, 2 << 30) == 5  # 1e8 ids x 1.25 margin x 80 bytes = 10 GB over 2 GiB: 4.66
    assert partitions_for(1_000_000, 2 << 30) == 1
    assert partitions_for(0, 1 << 20) == 1


def test_the_distinct_estimate_is_close(rows):
    single = rows.collect()["single"]
    estimate = estimated_distinct(rows, ["single", "bag"])
    assert estimate["single"] == pytest.approx(single.n_unique(), rel=0.1)
    assert estimate["bag"] == pytest.approx(50, abs=3)


def test_statistics_within_little_memory_equal_those_in_one_pass(rows, tmp_path):
    write_statistics(rows, ["single", "bag"], tmp_path / "one")
    write_statistics(rows, ["single", "bag"], tmp_path / "small", memory_bytes=40_000)  # several partitions each
    for feature in ("single", "bag"):
        assert pl.read_parquet(tmp_path / "small" / f"{feature}.parquet").equals(
            pl.read_parquet(tmp_path / "one" / f"{feature}.parquet")
        )
