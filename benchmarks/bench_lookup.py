"""Forward lookup throughput of every strategy against `full`, in one run (issue: table strategies).

Each preset's lookup module is built from the statistics of a 1M-row synthetic cache with Criteo
Kaggle's cardinality profile, wrapped in DistributedModelParallel as training does (one process,
fused fbgemm kernels), and timed on the same batches of 4096 rows x 26 features, no gradients.
A strategy whose serving form differs (`pruned`) is timed in both forms.
Rounds alternate between strategies so machine noise hits them alike.

    python benchmarks/bench_lookup.py [--compression 10] [--batches 10] [--rounds 5] [--strategies tt,robe]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import torch  # noqa: E402
from common import machine, synthetic_cache  # noqa: E402

from recsys.data.loader import BatchLoader  # noqa: E402
from recsys.tables import build_lookup, load_spec  # noqa: E402
from recsys.train.distributed import ensure_process_group, shard_model  # noqa: E402

TABLES = Path(__file__).resolve().parents[1] / "tables"
BATCH = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compression", default="10", help="which presets: tables/<strategy>-<this>x*.toml")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strategies", help="comma-separated strategies to time beside full (default: every preset)")
    arguments = parser.parse_args()
    ensure_process_group()
    cache = synthetic_cache(arguments.rows)
    statistics_ = cache.statistics()
    batches = [batch.sparse for _, batch in zip(range(arguments.batches), BatchLoader(cache, "train", BATCH, True))]
    presets = [TABLES / "full.toml", *sorted(TABLES.glob(f"*-{arguments.compression}x*.toml"))]
    if arguments.strategies:
        wanted = set(arguments.strategies.split(","))
        presets = [path for path in presets if path.stem == "full" or path.stem.split("-")[0] in wanted]
    lookups = {}
    for path in presets:
        torch.manual_seed(0)
        lookup = build_lookup(load_spec(path), statistics_)
        if lookup.compacts:  # time the serving form too (compact() first finishes pruning the training form)
            lookups[f"{path.stem} (compact)"] = shard_model(lookup.compact(), sparse_learning_rate=0.05)
        lookups[path.stem] = shard_model(lookup, sparse_learning_rate=0.05)
    print(machine())
    timings: dict[str, list[float]] = {name: [] for name in lookups}
    with torch.no_grad():
        for lookup in lookups.values():
            lookup(batches[0])  # warm-up
        for _ in range(arguments.rounds):
            for name, lookup in lookups.items():
                started = time.perf_counter()
                for batch in batches:
                    lookup(batch).values()
                timings[name].append((time.perf_counter() - started) / len(batches))
    full = statistics.median(timings["full"])
    print(f"\nforward, batch {BATCH} x 26 features, median of {arguments.rounds} rounds x {arguments.batches} batches")
    print(f"{'tables':<28}{'ms/batch':>10}{'rows/s':>12}{'vs full':>9}")
    for name, values in timings.items():
        step = statistics.median(values)
        print(f"{name:<28}{step * 1000:>10.2f}{BATCH / step:>12,.0f}{full / step:>8.2f}x")


if __name__ == "__main__":
    main()
