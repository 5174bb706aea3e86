"""Training throughput and memory per rank for each sharding type, 2 processes against 1 (issue: sharding).

DLRM (512-256 / 512-256) with full tables over 26 features at dim 16, on the 1M-row synthetic cache
with Criteo Kaggle's cardinality profile, global batch 4096. Each configuration is launched under
torchrun in turn, in one invocation of this script; every rank trains on its part of each global
batch and reports its peak resident memory and the bytes of tables and optimizer state its shards hold.

    python benchmarks/bench_sharding.py [--steps 30] [--nproc 2] [--shardings table_wise row_wise ...]

gloo on CPU, nccl where CUDA is available (the same code path, picked by recsys).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from common import machine, synthetic_cache  # noqa: E402

from recsys.data.loader import BatchLoader  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.distributed import (  # noqa: E402
    compute_device,
    ensure_process_group,
    make_optimizer,
    rank_and_world_size,
    shard_model,
)
from recsys.train.job import Job, build  # noqa: E402
from recsys.train.loop import batch_loss  # noqa: E402
from recsys.train.sharding import ShardingRequest, rank_bytes, table_shapes  # noqa: E402

SHARDINGS = ["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]
BATCH = 4096


def worker(arguments: argparse.Namespace) -> None:
    """One rank: shard, warm up, time `steps` training steps, report to rank 0."""
    ensure_process_group()
    rank, world_size = rank_and_world_size()
    cache = synthetic_cache(arguments.rows)
    job = Job(cache=cache, spec=spec_from_mapping({"strategy": "full"}), model="dlrm", config=TrainConfig())
    model, _ = build(job)
    shapes = table_shapes(model)
    sharded = shard_model(model, 0.05, request=ShardingRequest(arguments.sharding))
    optimizer = make_optimizer(sharded, "adam", 1e-3)
    device = compute_device()
    batches = iter(BatchLoader(cache, "train", BATCH, shuffle=True, rank=rank, world_size=world_size))
    for step in range(arguments.warmup + arguments.steps):
        if step == arguments.warmup:
            dist.barrier()
            started = time.perf_counter()
        batch = next(batches).to(device)
        optimizer.zero_grad()
        batch_loss(sharded(batch.dense, batch.sparse), batch).backward()
        optimizer.step()
    dist.barrier()
    elapsed = time.perf_counter() - started
    report = {
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "table_bytes": rank_bytes(sharded.plan, shapes, world_size)[rank],
    }
    reports: list = [None] * world_size
    dist.all_gather_object(reports, report)
    if rank == 0:
        result = {"samples_per_s": arguments.steps * BATCH / elapsed, "ranks": reports}
        Path(arguments.output).write_text(json.dumps(result))
    dist.destroy_process_group()


def launch(sharding: str, processes: int, arguments: argparse.Namespace, output: Path) -> dict:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [__file__, "--worker", "--sharding", sharding, "--output", str(output)]
    command += ["--rows", str(arguments.rows), "--steps", str(arguments.steps), "--warmup", str(arguments.warmup)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
    return json.loads(output.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--shardings", nargs="+", default=SHARDINGS, choices=SHARDINGS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sharding", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments)
        return
    synthetic_cache(arguments.rows)  # made once, before the ranks read it
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    print(machine(), f"backend {backend}")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        configurations = [("table_wise", 1)] + [(sharding, arguments.nproc) for sharding in arguments.shardings]
        for sharding, processes in configurations:
            result = launch(sharding, processes, arguments, Path(directory) / f"{sharding}-{processes}.json")
            rows.append((sharding, processes, result))
            print(f"{sharding} x{processes}: {result['samples_per_s']:,.0f} samples/s", flush=True)
    single = rows[0][2]["samples_per_s"]
    print(f"\nDLRM, full tables, batch {BATCH}, {arguments.steps} steps after {arguments.warmup} warm-up steps")
    print("| sharding | processes | samples/s | vs 1 process | peak RSS per rank (MB) | tables + optimizer (MB) |")
    print("|---|---:|---:|---:|---|---|")
    for sharding, processes, result in rows:
        rss = " / ".join(f"{rank['peak_rss_bytes'] / 1e6:,.0f}" for rank in result["ranks"])
        tables = " / ".join(f"{rank['table_bytes'] / 1e6:,.1f}" for rank in result["ranks"])
        ratio = result["samples_per_s"] / single
        print(f"| {sharding} | {processes} | {result['samples_per_s']:,.0f} | {ratio:.2f}x | {rss} | {tables} |")


if __name__ == "__main__":
    main()
