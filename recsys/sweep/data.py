"""The prepared cache an experiment trains on, made once and reused while its settings stay the same.

[data] synthetic_rows = N   ->  synthetic Criteo-like rows, prepared    (<root>/<settings hash>/)
[data] raw = [files]        ->  those raw files (of `format`), prepared (<root>/<settings hash>/);
                                with test = [files], those as the whole test split
[data] prepared = "dir"     ->  that cache, as it is
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm import tqdm

from recsys.data.cache import PreparedCache
from recsys.data.prepare import PrepareOptions, prepare
from recsys.data.synth import GENERATOR_VERSION, SynthConfig
from recsys.data.synth_files import write_synthetic
from recsys.machine import available_cores
from recsys.sweep.spec import DataSpec

DEFAULT_ROOT = Path(".recsys-cache")


def settings_key(data: DataSpec) -> str:
    """What the cache depends on: the data settings, the raw files' sizes and times, the generator."""
    settings = {**data.identity(), "generator_version": GENERATOR_VERSION}
    settings["raw_files"] = [[str(Path(name).resolve()), *file_stamp(Path(name))] for name in data.raw]
    if data.test:
        settings["test_files"] = [[str(Path(name).resolve()), *file_stamp(Path(name))] for name in data.test]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def file_stamp(path: Path) -> list[int]:
    """Size and modification time of a raw file, or of every file in a raw directory (MovieLens)."""
    if not path.exists():
        raise FileNotFoundError(f"[data] raw file {path} does not exist")
    files = sorted(item for item in path.iterdir() if item.is_file()) if path.is_dir() else [path]
    return [value for item in files for value in (item.stat().st_size, item.stat().st_mtime_ns)]


def prepared_cache(data: DataSpec, root: Path = DEFAULT_ROOT) -> PreparedCache:
    """The experiment's cache: opened when it exists for these settings, made (atomically) otherwise."""
    if data.prepared:
        return PreparedCache.open(data.prepared)
    target = root / settings_key(data)
    if (target / "meta.json").exists():
        return PreparedCache.open(target)
    root.mkdir(parents=True, exist_ok=True)
    test_paths = tuple(Path(name) for name in data.test)
    options = PrepareOptions(
        split=tuple(data.split), overwrite=True, format=data.format, test_paths=test_paths, shuffle=data.shuffle
    )
    if data.raw:
        return prepare([Path(name) for name in data.raw], target, options)
    raw = root / f"{target.name}.synthetic.tsv"
    config = SynthConfig(rows=data.synthetic_rows, cardinality_scale=data.cardinality_scale, seed=data.data_seed)
    with tqdm(total=config.rows, unit="rows", unit_scale=True, desc="synthetic data") as bar:
        write_synthetic(config, raw, on_rows=bar.update, workers=available_cores())
    try:
        with tqdm(total=config.rows, unit="rows", unit_scale=True, desc="prepare") as bar:
            return prepare([raw], target, options, on_block=lambda rows, _: bar.update(rows))
    finally:
        raw.unlink(missing_ok=True)
