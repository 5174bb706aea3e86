"""Training throughput by thread count, alone and beside another training job (issue 16, `--threads`).

Trains DLRM (default 512-256 MLPs) with hashing tables at 10x for one epoch on a synthetic cache,
as `recsys train` processes, and reads their `train/samples_per_s`: with 1 and 2 threads on a quiet
machine, then again while another `recsys train` (default threads) runs in a loop beside it. The
question it answers: how much does oversubscribing the cores cost, and does `--threads 1` hold up.

    python benchmarks/bench_threads.py [--rows 100000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORKDIR, machine, synthetic_cache  # noqa: E402


def train_command(cache: Path, spec: Path, threads: int | None) -> list[str]:
    command = [sys.executable, "-m", "recsys", "train", "--data", str(cache), "--tables", str(spec)]
    command += ["--epochs", "1", "--no-progress", "--no-tracking"]
    return command + (["--threads", str(threads)] if threads else [])


def samples_per_second(cache: Path, spec: Path, threads: int) -> float:
    output = subprocess.run(train_command(cache, spec, threads), capture_output=True, text=True, check=True).stdout
    return float(re.search(r"train/samples_per_s: (\S+)", output).group(1))


def neighbour(cache: Path, spec: Path) -> subprocess.Popen:
    """Another training job, restarted as soon as it ends, in its own process group."""
    loop = f"while true; do {' '.join(train_command(cache, spec, None))} >/dev/null 2>&1; done"
    return subprocess.Popen(["sh", "-c", loop], start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    arguments = parser.parse_args()
    cache = synthetic_cache(arguments.rows, 0.02).path
    spec = WORKDIR / "threads-hashing.toml"
    spec.write_text('strategy = "hashing"\ncompression = 10\n')
    print(f"machine: {machine()}; DLRM 512-256, hashing 10x, one epoch of {arguments.rows * 0.8:,.0f} rows")
    print("| beside | --threads | samples/s (each run) | median |")
    print("|---|---:|---|---:|")
    for beside in ("nothing", "another training job (default threads)"):
        other = neighbour(cache, spec) if beside != "nothing" else None
        try:
            if other:
                time.sleep(15)  # let it load and start training
            for threads in (1, 2):
                rates = sorted(samples_per_second(cache, spec, threads) for _ in range(arguments.repeats))
                runs = ", ".join(f"{rate:,.0f}" for rate in rates)
                print(f"| {beside} | {threads} | {runs} | {rates[len(rates) // 2]:,.0f} |", flush=True)
        finally:
            if other:
                os.killpg(other.pid, signal.SIGKILL)
                other.wait()


if __name__ == "__main__":
    main()
