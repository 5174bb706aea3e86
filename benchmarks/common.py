"""Helpers shared by the benchmarks: synthetic inputs made once under .bench/, and timing."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from recsys.data.cache import PreparedCache
from recsys.data.prepare import PrepareOptions, prepare
from recsys.data.synth import SynthConfig
from recsys.data.synth_files import write_synthetic
from recsys.machine import available_cores

WORKDIR = Path(".bench")


def synthetic_file(rows: int, cardinality_scale: float = 1.0) -> Path:
    """A Criteo-format file of `rows` rows (Criteo Kaggle's cardinality profile), made once."""
    path = WORKDIR / f"synthetic-{rows}-{cardinality_scale}.tsv"
    if not path.exists():
        WORKDIR.mkdir(exist_ok=True)
        print(f"writing {path} ...", flush=True)
        write_synthetic(SynthConfig(rows=rows, cardinality_scale=cardinality_scale), path, workers=available_cores())
    return path


def synthetic_cache(rows: int, cardinality_scale: float = 1.0) -> PreparedCache:
    path = WORKDIR / f"cache-{rows}-{cardinality_scale}"
    if not (path / "meta.json").exists():
        prepare([synthetic_file(rows, cardinality_scale)], path, PrepareOptions(overwrite=True))
    return PreparedCache.open(path)


def machine() -> str:
    """The processor, cores and torch build the figures were taken on."""
    import torch

    processor = platform.processor() or platform.machine()
    return f"{processor}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
