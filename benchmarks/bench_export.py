"""Export time and raw-row encoding speed, through the command line only, so two trees compare side by side.

Trains DLRM (default MLPs) with full tables for one epoch with a checkpoint on a synthetic
Criteo-like cache (`recsys train`), then times `recsys export CHECKPOINT -o DIR` as whole processes
(`--repeats` times, the first dropped as warm-up) and the in-process encoding of raw JSON rows at
batch 1 and 512 by the exported model's encoder. Everything goes through the command line and
`ServedModel`, which every version has, so the same script measures an older tree too:

    python benchmarks/bench_export.py                                          # this tree
    python benchmarks/bench_export.py --tree /path/to/other/checkout --tag other   # another (same .venv)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raw_rows import json_rows  # noqa: E402

WORKDIR = Path(".bench").resolve()
TREE = Path(__file__).resolve().parents[1]


def recsys(tree: Path, *arguments: str) -> float:
    """Run `recsys ARGUMENTS` of the checkout `tree` (its root first on the path) to the end; its wall seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "recsys", *arguments]
    subprocess.run(command, check=True, capture_output=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    return time.perf_counter() - started


def prepared(tree: Path, rows: int, root: Path) -> Path:
    raw, cache = root / "raw.tsv", root / "cache"
    if not (cache / "meta.json").exists():
        recsys(tree, "data", "synth", "-o", str(raw), "--rows", str(rows), "--cardinality-scale", "0.02")
        recsys(tree, "data", "prepare", str(raw), "-o", str(cache))
    return cache


def encoding(artifact: Path, rows: list[dict], repeats: int) -> list[str]:
    from recsys.serving.artifact import ServedModel

    encoder = ServedModel.load(artifact).encoder
    lines = []
    for batch, count in ((1, repeats), (512, max(repeats // 10, 20))):
        part = rows[:batch]
        encoder.encode(part)
        seconds = []
        for _ in range(count):
            started = time.perf_counter()
            encoder.encode(part)
            seconds.append(time.perf_counter() - started)
        p50, p99 = np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3
        rate = batch / np.median(seconds)
        lines.append(f"encode batch {batch}: p50 {p50:.3f} ms, p99 {p99:.3f} ms, {rate:,.0f} rows/s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=4, help="export runs; the first is a warm-up (default 4)")
    parser.add_argument("--encode-repeats", type=int, default=2000)
    parser.add_argument("--tag", default="this", help="a name for the tree measured (default this)")
    parser.add_argument("--tree", type=Path, default=TREE, help="the checkout whose recsys to measure (default this)")
    arguments = parser.parse_args()
    tree = arguments.tree.resolve()
    sys.path.insert(0, str(tree))  # ServedModel of that checkout, for the encoding figures
    root = WORKDIR / f"export-{arguments.tag}"
    root.mkdir(parents=True, exist_ok=True)
    cache = prepared(tree, arguments.rows, root)
    checkpoints, artifact, spec = root / "checkpoints", root / "model", root / "full.toml"
    spec.write_text('strategy = "full"\n')
    shutil.rmtree(checkpoints, ignore_errors=True)
    train = ["train", "--data", str(cache), "--tables", str(spec), "--checkpoint-dir", str(checkpoints)]
    recsys(tree, *train, "--no-tracking", "--no-progress")
    seconds = [recsys(tree, "export", str(checkpoints), "-o", str(artifact)) for _ in range(arguments.repeats)][1:]
    print(f"{arguments.tag}: recsys export of DLRM full ({arguments.rows:,} rows, scale 0.02): "
          f"min {min(seconds):.2f} s, median {np.median(seconds):.2f} s over {len(seconds)} runs")  # fmt: skip
    raw = root / "rows.tsv"
    if not raw.exists():
        recsys(tree, "data", "synth", "-o", str(raw), "--rows", "512", "--cardinality-scale", "0.02", "--seed", "1")
    for line in encoding(artifact, json_rows(raw, 512), arguments.encode_repeats):
        print(f"{arguments.tag}: {line}")


if __name__ == "__main__":
    main()
