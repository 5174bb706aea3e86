"""Id statistics of a huge vocabulary within a memory setting, against one hash table, side by side.

Writes `--ids` distinct 63-bit ids of one feature (a few of them repeated, so counts differ) as
parquet parts like a prepared cache's, then counts them with `recsys.data.stats.write_statistics`
in a child process twice: with `--memory-mb` (partitioned when the estimate does not fit) and with
memory enough for one hash table (as before issue 20). Reports each one's wall time and peak
resident memory (read from the kernel when the child ends) and checks the two files are identical.
Target (issue 20): statistics of a feature with 10^8 distinct ids within 8 GB.

    python benchmarks/bench_statistics.py [--ids 100000000] [--memory-mb 2048] [--workdir .bench/statistics]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.synth import splitmix64

TREE = Path(__file__).resolve().parents[1]
PART_ROWS = 5_000_000
COUNT = """
import sys
from pathlib import Path
import polars as pl
from recsys.data.stats import write_statistics
parts = sorted(Path(sys.argv[1]).glob("part-*.parquet"))
print(write_statistics(pl.scan_parquet(parts), ["C1"], Path(sys.argv[2]), memory_bytes=int(sys.argv[3]) << 20))
"""


def write_parts(directory: Path, ids: int) -> int:
    """`ids` distinct ids, every tenth of the first million repeated (counts 1 to 11); return the rows."""
    directory.mkdir(parents=True)
    rows = 0
    for index, start in enumerate(range(0, ids, PART_ROWS)):
        values = (splitmix64(np.arange(start, min(start + PART_ROWS, ids), dtype=np.uint64)) >> np.uint64(1)).astype(
            np.int64
        )
        if index == 0:
            values = np.concatenate([values, np.repeat(values[:1_000_000:10], np.arange(100_000) % 10 + 1)])
        pl.DataFrame({"C1": values}).write_parquet(directory / f"part-{index:06d}.parquet", compression="lz4")
        rows += len(values)
    return rows


def counted_in_child(parts: Path, output: Path, memory_mb: int) -> tuple[float, float]:
    """(seconds, peak MB) of counting in a child process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", COUNT, str(parts), str(output), str(memory_mb)], cwd=TREE)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"counting with {memory_mb} MB failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=100_000_000, help="distinct ids of the feature")
    parser.add_argument("--memory-mb", type=int, default=2048, help="the statistics memory setting to measure")
    parser.add_argument("--workdir", type=Path, default=TREE / ".bench" / "statistics")
    arguments = parser.parse_args()
    if arguments.workdir.exists():
        raise SystemExit(f"{arguments.workdir} exists; remove it or give another --workdir")
    rows = write_parts(arguments.workdir / "parts", arguments.ids)
    print(f"{rows:,} rows, {arguments.ids:,} distinct ids")
    results = {}
    for label, memory_mb in ((f"{arguments.memory_mb} MB setting", arguments.memory_mb), ("one table", 1 << 30)):
        output = arguments.workdir / label.replace(" ", "-")
        results[label] = (*counted_in_child(arguments.workdir / "parts", output, memory_mb), output / "C1.parquet")
    first, second = (pl.read_parquet(result[2]) for result in results.values())
    print("| counting | wall s | peak RSS MB |\n|---|---:|---:|")
    for label, (seconds, peak, _) in results.items():
        print(f"| {label} | {seconds:.1f} | {peak:,.0f} |")
    print(f"identical files: {first.equals(second)}; {len(first):,} ids, counts {first['count'].max()} to 1")
    shutil.rmtree(arguments.workdir)


if __name__ == "__main__":
    main()
