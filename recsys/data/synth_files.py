"""`recsys data synth`'s files: blocks of synthetic rows made in parallel processes and written in order.

Every block is a pure function of (config, day, block number), so blocks can be made by any process
in any order and the bytes written are the same for any number of workers. Each worker keeps its
planted model and the current day's effect tables between blocks. Each file is written under a
temporary name and renamed into place when complete; with `days` > 1, day d goes to the output's
name with `_d` before its extension (`day.tsv.gz` -> `day_0.tsv.gz`, `day_1.tsv.gz`, ...).
"""

from __future__ import annotations

import functools
import gzip
import io
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recsys.data.synth import TABLE_LIMIT, EffectTables, PlantedModel, SynthConfig, block_frame
from recsys.outputs import put_in_place, remove, temporary_directory, temporary_file

BLOCK_ROWS = 200_000
"""Rows per block; part of what a seed means (other block sizes draw other rows)."""
GZIP_LEVEL = 1
"""Fast compression: a level-9 member costs 20x the time of making its rows, for 10% fewer bytes."""


@dataclass(frozen=True)
class BlockTask:
    """One block to make: which rows of which day, and whether to gzip them (each block one gzip member)."""

    config: SynthConfig
    day: int
    index: int
    rows: int
    compress: bool


_worker_state: dict[SynthConfig, tuple[PlantedModel, EffectTables | None]] = {}
"""Per process: each config's planted model and the effect tables of the day it made last."""


def table_rows(config: SynthConfig) -> int:
    """Ranks tabulated per feature and day: worth hashing once only when a day's rows will reuse them."""
    return min(TABLE_LIMIT, config.rows // 16)


def block_bytes(task: BlockTask) -> bytes:
    """The block's rows as Criteo text (tab-separated, empty for missing), gzip-compressed if asked."""
    model, tables = _worker_state.get(task.config, (None, None))
    if model is None:
        model = PlantedModel(task.config)
    if tables is None or tables.day != task.day:
        tables = EffectTables(model, task.day, table_rows(task.config))
    _worker_state.clear()
    _worker_state[task.config] = (model, tables)
    buffer = io.BytesIO()
    frame = block_frame(model, tables, task.index, task.rows)
    frame.write_csv(buffer, separator="\t", include_header=False, quote_style="never", null_value="")
    text = buffer.getvalue()
    return gzip.compress(text, compresslevel=GZIP_LEVEL, mtime=0) if task.compress else text


def day_paths(output: Path, days: int, first_day: int = 0) -> list[Path]:
    """The file of each day: `output` itself for day 0 alone, else `output` with `_<day>` before its extension."""
    if days == 1 and first_day == 0:
        return [output]
    compressed = output.name.endswith(".gz")
    core = output.name[: -len(".gz")] if compressed else output.name
    stem, dot, extension = core.rpartition(".")
    if not dot or not stem:
        stem, extension = core, ""
    suffix = (f".{extension}" if extension else "") + (".gz" if compressed else "")
    return [output.with_name(f"{stem}_{day}{suffix}") for day in range(first_day, first_day + days)]


def day_tasks(config: SynthConfig, day: int, compress: bool, block_rows: int) -> list[BlockTask]:
    return [
        BlockTask(config, day, index, min(block_rows, config.rows - start), compress)
        for index, start in enumerate(range(0, config.rows, block_rows))
    ]


def block_part(task: BlockTask, directory: Path) -> Path:
    """Make the block in a worker and leave it in a file of `directory`: sending 47 MB blocks back through a pipe
    cost the writing process more time than a worker takes to make one."""
    part = directory / f"{task.day}-{task.index}.part"
    part.write_bytes(block_bytes(task))
    return part


def made_in_order(tasks: list[BlockTask], workers: int, directory: Path) -> Iterator[bytes | Path]:
    """Each task's block in task order: its bytes, made in this process (`workers` 1, or one task), or the file
    in `directory` that one of `workers` processes left it in."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(block_bytes, tasks)
        return
    context = multiprocessing.get_context("spawn")  # fork would copy polars' thread pool
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as executor:
        yield from executor.map(functools.partial(block_part, directory=directory), tasks)


def write_synthetic(
    config: SynthConfig,
    output: Path,
    on_rows: Callable[[int], None] | None = None,
    workers: int = 1,
    block_rows: int = BLOCK_ROWS,
) -> list[Path]:
    """Write `config.rows` rows per day to each day's file (gzip where the name ends in .gz); return the files."""
    compress = output.name.endswith(".gz")
    days = range(config.first_day, config.first_day + config.days)
    per_day = [day_tasks(config, day, compress, block_rows) for day in days]
    paths = day_paths(output, config.days, config.first_day)
    parts = temporary_directory(output)
    blocks = made_in_order([task for tasks in per_day for task in tasks], workers, parts)
    try:
        for path, tasks in zip(paths, per_day):
            write_day(path, ((task.rows, next(blocks)) for task in tasks), on_rows)
    finally:
        blocks.close()
        remove(parts)
    return paths


def write_day(path: Path, blocks: Iterable[tuple[int, bytes | Path]], on_rows: Callable[[int], None] | None) -> None:
    """One day's (rows, block) pairs into `path`, through a temporary file renamed into place once complete."""
    partial = temporary_file(path)
    try:
        with partial.open("wb") as stream:
            for rows, block in blocks:
                append(stream, block)
                if on_rows is not None:
                    on_rows(rows)
        put_in_place(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def append(stream: BinaryIO, block: bytes | Path) -> None:
    """Write a block's bytes, or copy its file's (in the kernel) and remove the file."""
    if isinstance(block, bytes):
        stream.write(block)
        return
    stream.flush()
    with block.open("rb") as source:
        remaining = block.stat().st_size
        while remaining > 0:
            remaining -= os.copy_file_range(source.fileno(), stream.fileno(), remaining)
    block.unlink()
