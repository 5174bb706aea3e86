"""Criteo at real scale on one machine, end to end, through the command line as a user runs it.

Stages, each `recsys ...` in a child process, timed by the wall clock, its peak resident memory read
from the kernel when it ends (`wait4`; for `data synth`, the writing process's, not its workers').

Kaggle (default):
1. `recsys data synth`: 45,840,617 rows (Criteo Kaggle's training set) with Kaggle's cardinalities,
   and a held-out day (day 1 of the same log: the same planted model, 5% of every feature's ranks
   passed to new ids) to score;
2. `recsys data prepare`: parse, split 0.8/0.1/0.1 by row order, count ids;
3. per table strategy (`full`, and `hashing`, `qr`, `unified` at 10x): `recsys train` for one epoch
   of DLRM (its reported training samples/s and test AUC), `recsys export`, and `recsys predict` on
   the held-out day (rows/s and AUC).
Targets (issue 20): prepare in 2 minutes or less within 4 GB; `full` with every id fits.

Terabyte (`--profile terabyte`): 200M rows with Criteo Terabyte's vocabularies (4 gzip day files)
through prepare and its statistics within `--stats-memory-mb`; then a later day's 4M rows as a
training slice: one epoch with each 100x preset, and `full` row-wise over 2 processes (`--nproc 2 --sharding
row_wise`) with a `--rank-memory` that holds 60% of its table, so one process cannot hold it.

    python benchmarks/bench_scale.py [--rows 45840617] [--heldout-rows 1000000]
        [--tables full,hashing-10x,qr-10x,unified-10x] [--workdir .bench/scale] [--keep]
    python benchmarks/bench_scale.py --profile terabyte [--rows 200000000] [--days 4] [--stats-memory-mb 2048]
        [--slice-rows 4000000] [--rank-memory BYTES]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TREE = Path(__file__).resolve().parents[1]
KAGGLE_ROWS = 45_840_617
KAGGLE_TABLES = "full,hashing-10x,qr-10x,unified-10x"
TERABYTE_TABLES = "hashing-100x,qr-100x,unified-100x"


@dataclass
class Stage:
    """One command's measurements."""

    name: str
    seconds: float
    peak_mb: float
    rows: int
    notes: str = ""


def run(name: str, command: list[str], log: Path, rows: int) -> tuple[Stage, str]:
    """Run `recsys` with `command`, its output into `log`; the stage and what it printed."""
    print(f"{name}: recsys {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen([sys.executable, "-m", "recsys", *command], stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed (exit {process.returncode}); its output is in {log}:\n{text[-2000:]}")
    stage = Stage(name, seconds, usage.ru_maxrss / 1024, rows)
    rate = f", {rows / seconds:,.0f} rows/s" if rows else ""
    print(f"  {seconds:.1f} s{rate}, peak {stage.peak_mb:,.0f} MB", flush=True)
    return stage, text


def reported(text: str, key: str) -> float:
    """A `key: value` line of a command's summary."""
    found = re.findall(rf"^\s*{re.escape(key)}: ([0-9.]+)", text, flags=re.MULTILINE)
    if not found:
        raise SystemExit(f"no {key} in the command's output")
    return float(found[-1])


def prepared_rows(text: str) -> dict[str, int]:
    found = re.search(r"train ([0-9,]+), val ([0-9,]+), test ([0-9,]+) rows", text)
    assert found, "prepare printed no split"
    return dict(zip(("train", "val", "test"), (int(group.replace(",", "")) for group in found.groups())))


def data_stages(arguments: argparse.Namespace, work: Path) -> tuple[list[Stage], dict[str, int], Path]:
    stages = []
    log = work / "synth.log"
    stage, _ = run(
        "synth", ["data", "synth", "-o", str(work / "log.tsv"), "--rows", str(arguments.rows)], log, arguments.rows
    )
    stages.append(stage)
    heldout = ["data", "synth", "-o", str(work / "heldout.tsv"), "--rows", str(arguments.heldout_rows)]
    run("held-out day", [*heldout, "--first-day", "1"], work / "heldout.log", arguments.heldout_rows)
    stage, text = run(
        "prepare",
        ["data", "prepare", str(work / "log.tsv"), "-o", str(work / "cache")],
        work / "prepare.log",
        arguments.rows,
    )
    stages.append(stage)
    (work / "log.tsv").unlink()
    return stages, prepared_rows(text), work / "heldout_1.tsv"


def strategy_stages(table: str, work: Path, split: dict[str, int], heldout: Path, heldout_rows: int) -> list[Stage]:
    checkpoints, artifact = work / f"checkpoints-{table}", work / f"artifact-{table}"
    spec = TREE / "tables" / f"{table}.toml"
    train = ["train", "--data", str(work / "cache"), "--tables", str(spec), "--no-tracking", "--no-progress"]
    stage, text = run(
        f"train {table}", [*train, "--checkpoint-dir", str(checkpoints)], work / f"train-{table}.log", split["train"]
    )
    stage.notes = (
        f"{reported(text, 'train/samples_per_s'):,.0f} training samples/s, test AUC {reported(text, 'test/auc'):.4f}"
    )
    stages = [stage]
    stage, _ = run(
        f"export {table}", ["export", str(checkpoints), "-o", str(artifact)], work / f"export-{table}.log", 0
    )
    stages.append(stage)
    scores = work / f"scores-{table}.parquet"
    predict = ["predict", str(artifact), str(heldout), "-o", str(scores), "--no-progress"]
    stage, text = run(f"predict {table}", predict, work / f"predict-{table}.log", heldout_rows)
    stage.notes = f"held-out day AUC {reported(text, 'auc'):.4f}"
    stages.append(stage)
    shutil.rmtree(checkpoints)
    return stages


def terabyte_stages(arguments: argparse.Namespace, work: Path) -> list[Stage]:
    """Terabyte's vocabularies: the log through prepare and statistics, then training on a slice (a later day)."""
    per_day = arguments.rows // arguments.days
    synth = ["data", "synth", "-o", str(work / "day.tsv.gz"), "--profile", "terabyte", "--rows", str(per_day)]
    stage, _ = run(
        "synth (gzip)", [*synth, "--days", str(arguments.days)], work / "synth.log", per_day * arguments.days
    )
    stages = [stage]
    days = [str(work / f"day_{day}.tsv.gz") for day in range(arguments.days)]
    memory = ["--stats-memory-mb", str(arguments.stats_memory_mb)]
    stage, _ = run(
        "prepare", ["data", "prepare", *days, "-o", str(work / "cache"), *memory], work / "prepare.log", stage.rows
    )
    meta = json.loads((work / "cache" / "meta.json").read_text())
    cardinalities = meta["cardinalities"]
    largest = max(cardinalities, key=cardinalities.get)
    stage.notes = (
        f"{sum(cardinalities.values()):,} distinct ids in the training split, {largest} {cardinalities[largest]:,}; "
        f"statistics within {arguments.stats_memory_mb} MB per feature"
    )
    stages.append(stage)
    shutil.rmtree(work / "cache")
    for day in days:
        Path(day).unlink()
    later = ["--rows", str(arguments.slice_rows), "--first-day", str(arguments.days)]
    run("slice", [*synth[:-2], *later], work / "slice-synth.log", arguments.slice_rows)
    slice_file = work / f"day_{arguments.days}.tsv.gz"
    stage, text = run(
        "prepare slice",
        ["data", "prepare", str(slice_file), "-o", str(work / "slice")],
        work / "slice.log",
        arguments.slice_rows,
    )
    stages.append(stage)
    split = prepared_rows(text)
    for name in arguments.tables.split(","):
        stages.append(trained(name, work, split, []))
    rank_memory = arguments.rank_memory or split_rank_memory(work / "slice")
    sharded = ["--nproc", "2", "--sharding", "row_wise", "--rank-memory", rank_memory]
    stages.append(trained("full", work, split, sharded))
    return stages


def split_rank_memory(cache: Path) -> str:
    """A per-process budget that holds 60% of the full table and its row-wise optimizer state, plus 64 MiB for
    the dense layers and batch buffers: one process cannot hold the table, two can."""
    cardinalities = json.loads((cache / "meta.json").read_text())["cardinalities"]
    table_bytes = sum(cardinalities.values()) * (16 * 4 + 4)
    return f"{int(0.6 * table_bytes) + (64 << 20)}B"


def trained(table: str, work: Path, split: dict[str, int], options: list[str]) -> Stage:
    """One epoch on the slice."""
    spec = TREE / "tables" / f"{table}.toml"
    command = [
        "train",
        "--data",
        str(work / "slice"),
        "--tables",
        str(spec),
        "--no-tracking",
        "--no-progress",
        *options,
    ]
    label = f"train {table}" + (f" ({' '.join(options)})" if options else "")
    stage, text = run(label, command, work / f"train-{table}.log", split["train"])
    samples = reported(text, "train/samples_per_s")
    stage.notes = f"{samples:,.0f} training samples/s, test AUC {reported(text, 'test/auc'):.4f}"
    return stage


def table(stages: list[Stage]) -> str:
    lines = ["| stage | wall s | rows/s | peak RSS MB | notes |", "|---|---:|---:|---:|---|"]
    for stage in stages:
        rate = f"{stage.rows / stage.seconds:,.0f}" if stage.rows else ""
        lines.append(f"| {stage.name} | {stage.seconds:,.1f} | {rate} | {stage.peak_mb:,.0f} | {stage.notes} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["kaggle", "terabyte"], default="kaggle")
    parser.add_argument("--rows", type=int, help=f"rows of the log (default: kaggle {KAGGLE_ROWS:,}, terabyte 200M)")
    parser.add_argument("--heldout-rows", type=int, default=1_000_000, help="kaggle: rows of the held-out day")
    parser.add_argument("--tables", help="presets in tables/ (default: kaggle full and 10x, terabyte 100x)")
    parser.add_argument("--days", type=int, default=4, help="terabyte: days the log is written as")
    parser.add_argument("--stats-memory-mb", type=int, default=2048, help="terabyte: the statistics memory setting")
    parser.add_argument("--slice-rows", type=int, default=4_000_000, help="terabyte: rows of the training slice")
    parser.add_argument(
        "--rank-memory", help="terabyte: per-process memory of the 2-process run (default: 60%% of the full table)"
    )
    parser.add_argument("--workdir", type=Path, default=TREE / ".bench" / "scale")
    parser.add_argument("--keep", action="store_true", help="keep the cache and artifacts (else removed at the end)")
    arguments = parser.parse_args()
    terabyte = arguments.profile == "terabyte"
    arguments.rows = arguments.rows or (200_000_000 if terabyte else KAGGLE_ROWS)
    arguments.tables = arguments.tables or (TERABYTE_TABLES if terabyte else KAGGLE_TABLES)
    work = arguments.workdir
    if work.exists():
        raise SystemExit(f"{work} exists; remove it (it holds an earlier run's data) or give --workdir")
    work.mkdir(parents=True)
    if terabyte:
        stages = terabyte_stages(arguments, work)
    else:
        stages, split, heldout = data_stages(arguments, work)
        for name in arguments.tables.split(","):
            stages.extend(strategy_stages(name, work, split, heldout, arguments.heldout_rows))
    print(f"\n{arguments.rows:,} rows ({arguments.profile})\n\n{table(stages)}")
    if not arguments.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
