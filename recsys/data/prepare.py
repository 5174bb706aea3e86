"""`recsys data prepare`: raw click logs -> a prepared cache (see `recsys.data.cache`).

Streams the raw files block by block (bounded memory), writes one parquet part per block, splits by
row order, then counts id frequencies over the training split. Everything is written under a
temporary name unique to the run and put in place at the end (`recsys.outputs`), so an interrupted
run leaves no half-written cache and a replaced cache is complete until the new one takes its name.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys import __version__
from recsys.data.bad_rows import BadRowTally
from recsys.data.cache import FORMAT_VERSION, META_FILE, PARTS_DIRECTORY, SPLITS, PreparedCache
from recsys.data.fields import MISSING_ID
from recsys.data.formats import DatasetFormat, dataset_format
from recsys.data.stats import FREQUENCY_DIRECTORY, STATISTICS_MEMORY_BYTES, write_statistics
from recsys.outputs import check_apart, put_in_place, remove, temporary_directory


@dataclass(frozen=True)
class PrepareOptions:
    """How to prepare: the split by row order (fractions, or row counts), the bad-row policy, the block size."""

    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    skip_bad_rows: bool = False
    overwrite: bool = False
    block_bytes: int = 32 << 20
    statistics_memory_bytes: int = STATISTICS_MEMORY_BYTES
    """Memory each feature's id counting may hold; larger vocabularies are counted in partitions (more passes)."""
    format: str = "criteo"
    """The raw format, a name in `recsys.data.formats.FORMATS`."""
    test_paths: tuple[Path, ...] = ()
    """Files read after the inputs as the whole test split (the split then divides the inputs into train and
    validation only: its test part must be 0)."""
    shuffle: int | None = None
    """Shuffle the inputs' valid rows with this seed before the split (a random split instead of one by row
    order); the rows are held in memory in their prepared form. Test files keep their order."""

    def __post_init__(self) -> None:
        check_row_split(self.split)
        if self.test_paths and self.split[2] != 0:
            raise ValueError(
                f"with test files the split's test part must be 0 (the files are the test split), got {self.split}; "
                "give e.g. --split 0.9,0.1,0"
            )
        dataset_format(self.format)
        if self.shuffle is not None and not 0 <= self.shuffle < 2**64:
            raise ValueError(f"the shuffle seed must be a whole number from 0 to 2**64 - 1, got {self.shuffle}")
        if self.block_bytes < 1 << 20:
            raise ValueError(f"blocks must be at least 1 MB, got {self.block_bytes:,} bytes")
        if self.statistics_memory_bytes < 64 << 20:
            raise ValueError(f"statistics memory must be at least 64 MB, got {self.statistics_memory_bytes:,} bytes")


def is_row_counts(split: tuple[float, ...]) -> bool:
    """Whether `split` gives rows per split (whole numbers adding up to more than 1) rather than fractions."""
    return sum(split) > 1 + 1e-6


def check_row_split(split: tuple[float, ...]) -> None:
    """Three finite non-negative numbers, train above 0: fractions adding up to 1, or whole row counts."""
    if len(split) != 3 or not all(math.isfinite(part) and part >= 0 for part in split):
        raise ValueError(f"split needs three non-negative numbers (train, val, test), got {split}")
    if split[0] <= 0:
        raise ValueError(f"the training split must not be empty, got {split}")
    if is_row_counts(split):
        if not all(float(part).is_integer() for part in split):
            raise ValueError(f"split: fractions must add up to 1 and row counts be whole numbers, got {split}")
    elif abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, got {split} (sum {sum(split)})")


def split_rows(total: int, split: tuple[float, float, float]) -> dict[str, int]:
    """Rows per split: row counts as given (they must add up to `total`), or fractions rounded to the
    nearest row with the test split taking the remainder."""
    if is_row_counts(split):
        counts = [int(part) for part in split]
        if sum(counts) != total:
            raise ValueError(
                f"the split's row counts {','.join(map(str, counts))} add up to {sum(counts):,}, but the input "
                f"holds {total:,} valid rows; make them add up to {total:,}, or give fractions"
            )
        return dict(zip(SPLITS, counts))
    train = round(total * split[0])
    val = min(round(total * split[1]), total - train)
    return dict(zip(SPLITS, (train, val, total - train - val)))


def check_inputs(paths: list[Path]) -> None:
    if not paths:
        raise ValueError("no input files given")
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse to replace anything but a prepared cache, and that only when asked."""
    if not output.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{output} already exists; pass --overwrite to replace it")
    if not is_prepared_cache(output):
        raise FileExistsError(
            f"{output} exists and is not a prepared cache (or holds other files too); it will not be replaced"
        )


def is_prepared_cache(directory: Path) -> bool:
    """A directory holding a prepared cache's entries and nothing else (so that replacing it loses nothing else)."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    own = {META_FILE, PARTS_DIRECTORY, FREQUENCY_DIRECTORY}
    entries = list(directory.iterdir())
    return isinstance(meta, dict) and "format_version" in meta and all(path.name in own for path in entries)


def prepare(
    paths: list[Path],
    output: Path,
    options: PrepareOptions = PrepareOptions(),
    on_block: Callable[[int, int], None] | None = None,
) -> PreparedCache:
    """Prepare `paths` (in order), then `options.test_paths` as the test split, into the cache at `output`;
    `on_block(rows, bytes)` reports progress."""
    groups = [paths, list(options.test_paths)] if options.test_paths else [paths]
    for group in groups:
        check_inputs(group)
    check_apart(output, [path for group in groups for path in group])
    check_output(output, options.overwrite)
    raw_format = dataset_format(options.format)
    schema = raw_format.schema(paths)
    if options.test_paths and raw_format.schema(list(options.test_paths)) != schema:
        raise ValueError(f"the test files {', '.join(map(str, options.test_paths))} have other fields than the inputs")
    partial = temporary_directory(output)
    try:
        started = time.perf_counter()
        tally = BadRowTally(skip=options.skip_bad_rows)
        totals = write_parts(raw_format, groups, partial / PARTS_DIRECTORY, tally, options.block_bytes, on_block)
        if options.shuffle is not None:
            shuffle_parts(partial / PARTS_DIRECTORY, totals[0], options.shuffle)
        for group, rows in zip(groups, totals):
            if rows == 0:
                raise ValueError(f"no valid rows in {', '.join(map(str, group))}")
        total = sum(totals)
        splits = split_rows(totals[0], options.split)
        if options.test_paths:
            splits["test"] = totals[1]
        if splits["train"] == 0:
            raise ValueError(f"{total} rows leave the training split empty; give more rows or a larger train fraction")
        parts = sorted((partial / PARTS_DIRECTORY).glob("part-*.parquet"))
        train_rows = pl.scan_parquet(parts).head(splits["train"])
        cardinalities = write_statistics(
            train_rows, list(schema.sparse_features), partial / FREQUENCY_DIRECTORY, options.statistics_memory_bytes
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "name": schema.name,
            "format": options.format,
            "schema": schema.to_dict(),
            "raw_fields": raw_format.raw_fields(paths),
            "splits": splits,
            "split_given": list(options.split),
            "split_fractions": [round(count / total, 6) for count in splits.values()],
            "shuffle_seed": options.shuffle,
            "cardinalities": cardinalities,
            "missing_id": MISSING_ID,
            "dense_transform": "log1p(max(x, 0)), missing -> 0" if schema.dense_features else None,
            "sources": sources_of(paths),
            "test_sources": sources_of(options.test_paths),
            "bad_rows": tally.to_dict(),
            "seconds": round(time.perf_counter() - started, 3),
            "recsys_version": __version__,
        }
        (partial / META_FILE).write_text(json.dumps(meta, indent=2))
        put_in_place(partial, output)
    finally:
        remove(partial)
    return PreparedCache.open(output)


def sources_of(paths: Sequence[Path]) -> list[dict]:
    return [{"path": str(path.resolve()), "bytes": path.stat().st_size} for path in paths]


def shuffle_parts(directory: Path, rows: int, seed: int) -> None:
    """Put the first `rows` rows of the parts (the inputs') in a random order fixed by `seed`, rewritten
    as parts of the same count in place of theirs; later parts (test files) stay as they are."""
    if rows == 0:
        return
    parts = sorted(directory.glob("part-*.parquet"))
    counts = [pl.scan_parquet(part).select(pl.len()).collect().item() for part in parts]
    inputs = parts[: next(index for index in range(len(parts) + 1) if sum(counts[:index]) == rows)]
    shuffled = pl.concat([pl.read_parquet(part) for part in inputs]).sample(fraction=1.0, shuffle=True, seed=seed)
    begin = 0
    for part, count in zip(inputs, counts):
        shuffled.slice(begin, count).write_parquet(part, statistics=False, compression="lz4")
        begin += count


def write_parts(
    raw_format: DatasetFormat,
    groups: list[list[Path]],
    directory: Path,
    tally: BadRowTally,
    block_bytes: int,
    on_block: Callable[[int, int], None] | None,
) -> list[int]:
    """Write one parquet part per non-empty block, numbered on across the groups of files (so parts keep their
    order); return the rows written per group."""
    directory.mkdir(parents=True)
    totals, index = [], 0
    for paths in groups:
        total = 0
        for frame, raw_bytes in raw_format.read(paths, tally, block_bytes):
            if len(frame):
                frame.write_parquet(directory / f"part-{index:06d}.parquet", statistics=False, compression="lz4")
                total += len(frame)
                index += 1
            if on_block is not None:
                on_block(len(frame), raw_bytes)
        totals.append(total)
    return totals
