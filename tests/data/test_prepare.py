"""`prepare`: row-order splits, statistics against independent counts, atomic output, clear refusals."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recsys.data.bad_rows import MalformedRowError
from recsys.data.cache import PreparedCache
from recsys.data.fields import MISSING_ID
from recsys.data.prepare import PrepareOptions, prepare, split_rows


def raw_column(path, index: int) -> list[str]:
    return [line.split("\t")[index] for line in path.read_text().splitlines()]


def test_splits_follow_row_order(synthetic_cache, synthetic_file):
    labels = np.array([int(value) for value in raw_column(synthetic_file, 0)])
    splits = synthetic_cache.meta["splits"]
    assert splits == {"train": 32_000, "val": 4_000, "test": 4_000}
    joined = np.concatenate(
        [synthetic_cache.scan(split).collect()["label"].to_numpy() for split in ("train", "val", "test")]
    )
    np.testing.assert_array_equal(joined, labels)


def test_statistics_count_the_training_split_only(synthetic_cache, synthetic_file):
    raw = raw_column(synthetic_file, 14 + 2)[:32_000]  # C3 of the training rows
    expected = Counter(int(value, 16) if value else MISSING_ID for value in raw)
    ids, counts = synthetic_cache.statistics().frequencies("C3")
    assert dict(zip(ids.tolist(), counts.tolist())) == dict(expected)
    assert list(counts) == sorted(counts, reverse=True)
    assert synthetic_cache.meta["cardinalities"]["C3"] == len(expected)


def test_vocabulary_honours_min_count(synthetic_cache):
    statistics = synthetic_cache.statistics()
    ids, counts = statistics.frequencies("C4")
    vocabulary = statistics.vocabulary("C4", 3)
    assert set(vocabulary.tolist()) == set(ids[counts >= 3].tolist())
    assert np.all(np.diff(vocabulary) > 0)


def test_many_files_are_read_in_order(criteo_sample, tmp_path):
    lines = criteo_sample.read_text().splitlines(keepends=True)
    first, second = tmp_path / "day0.tsv", tmp_path / "day1.tsv"
    first.write_text("".join(lines[:3000]))
    second.write_text("".join(lines[3000:]))
    together = prepare([first, second], tmp_path / "two", PrepareOptions(split=(0.5, 0.25, 0.25)))
    single = prepare([criteo_sample], tmp_path / "one", PrepareOptions(split=(0.5, 0.25, 0.25)))
    for split in ("train", "val", "test"):
        assert together.scan(split).collect().equals(single.scan(split).collect())
    assert together.meta["cardinalities"] == single.meta["cardinalities"]


def test_failure_leaves_nothing_behind(tmp_path, synthetic_file):
    bad = tmp_path / "bad.tsv"
    lines = synthetic_file.read_text().splitlines(keepends=True)[:100]
    lines[57] = "not\ta\tcriteo\trow\n"
    bad.write_text("".join(lines))
    output = tmp_path / "cache"
    with pytest.raises(MalformedRowError, match=r"bad.tsv:58: expected 40 tab-separated fields, found 4"):
        prepare([bad], output)
    assert list(tmp_path.iterdir()) == [bad]


def test_skipped_rows_are_reported_in_the_cache(tmp_path, synthetic_file):
    bad = tmp_path / "bad.tsv"
    lines = synthetic_file.read_text().splitlines(keepends=True)[:100]
    lines[10] = lines[10].replace("\t", "\tX", 1)
    bad.write_text("".join(lines))
    cache = prepare([bad], tmp_path / "cache", PrepareOptions(skip_bad_rows=True))
    assert sum(cache.meta["splits"].values()) == 99
    assert cache.meta["bad_rows"]["skipped"] == 1
    assert cache.meta["bad_rows"]["examples"][0].startswith(f"{bad}:11: I1")


def test_refuses_to_overwrite_and_bad_options(tmp_path, synthetic_file):
    output = tmp_path / "cache"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare([synthetic_file], output)
    with pytest.raises(FileExistsError, match="is not a prepared cache"):
        prepare([synthetic_file], output, PrepareOptions(overwrite=True))
    assert (output / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="training split must not be empty"):
        PrepareOptions(split=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="add up to 1"):
        PrepareOptions(split=(0.5, 0.2, 0.2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare([tmp_path / "missing.tsv"], tmp_path / "other")


def test_split_rounds_to_the_nearest_row():
    assert split_rows(100, (0.29, 0.71, 0.0)) == {"train": 29, "val": 71, "test": 0}
    assert split_rows(10, (0.8, 0.1, 0.1)) == {"train": 8, "val": 1, "test": 1}
    assert split_rows(10, (1.0, 0.0, 0.0)) == {"train": 10, "val": 0, "test": 0}  # a sum of 1 is fractions


def test_row_counts_split_exactly_and_must_add_up_to_the_rows(synthetic_file, tmp_path):
    lines = synthetic_file.read_text().splitlines(keepends=True)[:100]
    path = tmp_path / "hundred.tsv"
    path.write_text("".join(lines))
    cache = prepare([path], tmp_path / "counts", PrepareOptions(split=(83, 17, 0)))
    assert cache.meta["splits"] == {"train": 83, "val": 17, "test": 0}
    expected = [float(line.split("\t")[0]) for line in lines[83:]]
    assert cache.scan("val").collect()["label"].to_list() == expected
    with pytest.raises(ValueError, match="add up to 99, but the input holds 100 valid rows"):
        prepare([path], tmp_path / "short", PrepareOptions(split=(83, 16, 0)))
    assert not (tmp_path / "short").exists()
    with pytest.raises(ValueError, match="whole numbers"):
        PrepareOptions(split=(83.5, 16.5, 0))


def test_open_explains_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="recsys data prepare"):
        PreparedCache.open(tmp_path)


def test_test_files_are_the_whole_test_split_after_the_inputs(synthetic_file, tmp_path):
    lines = synthetic_file.read_text().splitlines(keepends=True)
    inputs, held_out = tmp_path / "days.tsv", tmp_path / "next-day.tsv"
    inputs.write_text("".join(lines[:1000]))
    held_out.write_text("".join(lines[1000:1300]))
    cache = prepare([inputs], tmp_path / "cache", PrepareOptions(split=(0.9, 0.1, 0), test_paths=(held_out,)))
    assert cache.meta["splits"] == {"train": 900, "val": 100, "test": 300}
    expected = [float(line.split("\t")[0]) for line in lines[1000:1300]]
    assert cache.scan("test").collect()["label"].to_list() == expected
    assert cache.meta["test_sources"][0]["path"] == str(held_out.resolve())
    whole = prepare([inputs], tmp_path / "whole", PrepareOptions(split=(0.9, 0.1, 0)))
    assert cache.meta["cardinalities"] == whole.meta["cardinalities"]  # statistics from the training split only
    with pytest.raises(ValueError, match="the split's test part must be 0"):
        PrepareOptions(test_paths=(held_out,))
    with pytest.raises(ValueError, match="no valid rows in .*empty.tsv"):
        (tmp_path / "empty.tsv").write_text("")
        prepare([inputs], tmp_path / "none", PrepareOptions(split=(0.9, 0.1, 0), test_paths=(tmp_path / "empty.tsv",)))


def rows_of(cache: PreparedCache, split: str) -> list[tuple]:
    return cache.scan(split).collect().rows()


def test_shuffle_splits_a_random_permutation_of_the_inputs_and_keeps_test_files_in_order(synthetic_file, tmp_path):
    lines = synthetic_file.read_text().splitlines(keepends=True)
    inputs, held_out = tmp_path / "days.tsv", tmp_path / "next-day.tsv"
    inputs.write_text("".join(lines[:1000]))
    held_out.write_text("".join(lines[1000:1100]))
    in_order = prepare([inputs], tmp_path / "in-order", PrepareOptions(split=(0.8, 0.2, 0)))
    options = PrepareOptions(split=(0.8, 0.2, 0), test_paths=(held_out,), shuffle=7)
    shuffled = prepare([inputs], tmp_path / "shuffled", options)
    again = prepare([inputs], tmp_path / "again", options)
    ordered = rows_of(in_order, "train") + rows_of(in_order, "val")
    mixed = rows_of(shuffled, "train") + rows_of(shuffled, "val")
    assert sorted(mixed) == sorted(ordered) and mixed != ordered  # the same rows, in another order
    assert mixed == rows_of(again, "train") + rows_of(again, "val")  # the seed fixes the order
    labels = [row[0] for row in rows_of(shuffled, "test")]
    assert labels == [float(line.split("\t")[0]) for line in lines[1000:1100]]
    assert shuffled.meta["splits"] == {"train": 800, "val": 200, "test": 100} and shuffled.meta["shuffle_seed"] == 7
    late = sum(1 for row in rows_of(shuffled, "val") if row in set(rows_of(in_order, "val")))
    assert late < 100  # validation is not the last 20% of the file (about 40 of 200 expected by chance)
