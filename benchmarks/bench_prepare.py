"""Data preparation: recsys `prepare` (polars) against a pandas read_csv pipeline, and peak memory.

Both sides do the same transform on the same 1M-row Criteo-format file: parse, label to float,
dense log(1 + max(x, 0)) with missing -> 0, hex ids to integers with missing -> -1, write parquet.
pandas runs with its default C parser and again with its pyarrow engine. recsys is also timed
without its statistics pass (id frequencies), which pandas does not do. Then `recsys data
prepare` runs in a child process on a 10M-row file to read its peak resident memory.

    python benchmarks/bench_prepare.py [--rows 1000000] [--large-rows 10000000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from common import WORKDIR, machine, synthetic_file  # noqa: E402

from recsys.data.bad_rows import BadRowTally  # noqa: E402
from recsys.data.criteo import CRITEO, read_criteo  # noqa: E402
from recsys.data.fields import MISSING_ID  # noqa: E402
from recsys.data.prepare import PrepareOptions, prepare  # noqa: E402


def pandas_pipeline(path: Path, output: Path, engine: str) -> int:
    frame = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=list(CRITEO.columns),
        engine=engine,
        dtype={**{name: "float64" for name in CRITEO.dense_features}, **{name: str for name in CRITEO.sparse_features}},
    )
    frame[CRITEO.label] = frame[CRITEO.label].astype(np.float32)
    for name in CRITEO.dense_features:
        frame[name] = np.log1p(frame[name].clip(lower=0).fillna(0).astype(np.float64)).astype(np.float32)
    for name in CRITEO.sparse_features:
        frame[name] = (
            frame[name].map(lambda value: int(value, 16), na_action="ignore").fillna(MISSING_ID).astype(np.int64)
        )
    frame.to_parquet(output)
    return len(frame)


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def peak_memory_of_prepare(path: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of `recsys data prepare` in a fresh child process."""
    output = WORKDIR / "cache-large"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "recsys", "data", "prepare", str(path), "-o", str(output), "--overwrite"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(output)
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--large-rows", type=int, default=10_000_000, help="0 skips the memory run")
    arguments = parser.parse_args()
    path = synthetic_file(arguments.rows)
    print(machine())
    print(f"{arguments.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB\n")
    results = {}
    results["recsys prepare (with statistics)"], _ = timed(
        lambda: prepare([path], WORKDIR / "bench-cache", PrepareOptions(overwrite=True))
    )
    results["recsys parse + transform only"], _ = timed(
        lambda: sum(len(frame) for frame, _ in read_criteo([path], BadRowTally()))
    )
    results["pandas read_csv (C engine)"], _ = timed(lambda: pandas_pipeline(path, WORKDIR / "pandas.parquet", "c"))
    results["pandas read_csv (pyarrow engine)"], _ = timed(
        lambda: pandas_pipeline(path, WORKDIR / "pandas.parquet", "pyarrow")
    )
    baseline = results["pandas read_csv (C engine)"]
    print(f"{'pipeline':<36}{'seconds':>9}{'rows/s':>12}{'vs pandas C':>13}")
    for name, seconds in results.items():
        print(f"{name:<36}{seconds:>9.2f}{arguments.rows / seconds:>12,.0f}{baseline / seconds:>12.1f}x")
    if arguments.large_rows:
        large = synthetic_file(arguments.large_rows)
        seconds, peak = peak_memory_of_prepare(large)
        print(
            f"\n{arguments.large_rows:,} rows ({large.stat().st_size / 1e9:.1f} GB): prepare {seconds:.1f} s "
            f"({arguments.large_rows / seconds:,.0f} rows/s), peak RSS {peak:.2f} GB"
        )


if __name__ == "__main__":
    main()
