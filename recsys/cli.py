"""The `recsys` command: parses arguments, calls the modules that do the work, prints results."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys.arguments import TRACKING_HELP, byte_size, int_list, split_fractions
from recsys.quiet import quiet_libraries
from recsys.serving_commands import add_serving_commands, run_export, run_predict, run_serve

EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError)
"""Errors that carry a message for the user (bad input, missing files): shown as one line.
Anything else is a bug and shows its traceback; RECSYS_DEBUG=1 shows it for these too."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="recsys",
        allow_abbrev=False,
        description="Train CTR models on Criteo-style click logs with interchangeable embedding-table strategies.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    add_data_commands(commands)
    add_train_command(commands)
    add_sweep_commands(commands)
    add_serving_commands(commands)
    demo = commands.add_parser(
        "demo",
        help="synthetic data -> prepare -> train full and hashing -> memory-vs-AUC table",
        description="The end-to-end demo: writes synthetic Criteo-format data, prepares it, trains DLRM "
        "with the full table and hashing at 10x and 100x compression, tracks the runs in MLflow and "
        "prints memory against AUC.",
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path(".demo"), help="where data and checkpoints go (default .demo)"
    )
    demo.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1,000,000)")
    demo.add_argument(
        "--cardinality-scale", type=float, default=0.02, help="fraction of Criteo Kaggle's vocabularies (default 0.02)"
    )
    demo.add_argument("--tracking-uri", help="MLflow store (default: sqlite file mlflow.db here)")
    return root


def add_sweep_commands(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run every configuration of an experiment file, tracked in MLflow",
        description="Run the grid of an experiment file (models x strategies x budgets x seeds, see "
        "experiments/) as MLflow child runs of one parent run. Finished configurations are skipped when the "
        "sweep runs again; a failing one is recorded with its error and the sweep goes on.",
    )
    sweep.add_argument("experiment", type=Path, help="experiment file, e.g. experiments/criteo_synthetic.toml")
    sweep.add_argument("--tracking-uri", help=TRACKING_HELP)
    sweep.add_argument(
        "--cache-dir", type=Path, default=Path(".recsys-cache"), help="where prepared data is kept (.recsys-cache)"
    )
    report = commands.add_parser(
        "report",
        help="plots and tables of a sweep: memory against AUC",
        description="Average a sweep's finished runs over seeds and write Pareto plots (AUC and log loss "
        "against bytes) and tables (CSV, Markdown) to experiments/results/<name>/, also logged to the "
        "sweep's parent run.",
    )
    report.add_argument("experiment", help="experiment file or name, e.g. experiments/criteo_synthetic.toml")
    report.add_argument("--tracking-uri", help=TRACKING_HELP)
    report.add_argument(
        "--output", type=Path, default=Path("experiments/results"), help="results root (default experiments/results)"
    )


def run_sweep_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.runner import run_sweep

    outcome = run_sweep(arguments.experiment, arguments.tracking_uri, arguments.cache_dir)
    print(f"done {len(outcome.done)}, skipped {len(outcome.skipped)} (finished before), failed {len(outcome.failed)}")
    for label, message in outcome.failed.items():
        print(f"  failed {label}: {message.splitlines()[-1]}")
    print(f"parent run {outcome.parent_run_id}; next: recsys report {arguments.experiment}")


def run_report_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.report import run_report
    from recsys.sweep.spec import load_experiment

    name = arguments.experiment
    if name.endswith(".toml"):
        name = load_experiment(name).name
    directory = run_report(name, arguments.tracking_uri, arguments.output)
    print((directory / "results.md").read_text())
    print(f"wrote {directory}/ (results.csv, results.md, pareto_*.png), also logged to the sweep's parent run")


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    from recsys.data.formats import FORMATS

    data = commands.add_parser("data", help="make and prepare click-log data").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser(
        "synth",
        help="write synthetic Criteo-format data with a planted click model",
        description="Write rows in Criteo's raw format (label, I1..I13, C1..C26 hex) with Criteo Kaggle's "
        "cardinality profile, Zipf-like value frequencies and labels from a hidden model with per-value "
        "effects and pairwise interactions. Deterministic for a seed.",
    )
    synth.add_argument("-o", "--output", type=Path, required=True, help="output file (.tsv, or .tsv.gz to compress)")
    synth.add_argument("--rows", type=int, default=1_000_000, help="rows to write (default 1,000,000)")
    synth.add_argument(
        "--cardinality-scale",
        type=float,
        default=1.0,
        help="fraction of Criteo Kaggle's vocabulary sizes, in (0, 1] (default 1)",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of the planted model and the rows (default 0)")
    prepare = data.add_parser(
        "prepare",
        help="raw click logs (Criteo, Avazu, Frappe, MovieLens) -> prepared columnar cache with feature statistics",
        description="Stream raw files (plain or .gz, in the order given) into a prepared parquet cache, "
        "split by row order into train/val/test, with id frequencies of the training split. Malformed "
        "rows stop the run with file and line, unless --skip-bad-rows. Formats: "
        + "; ".join(f"{name}: {raw_format.inputs}" for name, raw_format in FORMATS.items())
        + ".",
    )
    prepare.add_argument("inputs", type=Path, nargs="+", help="raw files, in chronological order")
    prepare.add_argument(
        "--format", choices=list(FORMATS), default="criteo", help="the raw format of the inputs (default criteo)"
    )
    prepare.add_argument("-o", "--output", type=Path, required=True, help="cache directory to create")
    prepare.add_argument(
        "--split",
        type=split_fractions,
        default=(0.8, 0.1, 0.1),
        help="train,val,test fractions by row order (default 0.8,0.1,0.1)",
    )
    prepare.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows and report them, instead of stopping at the first",
    )
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    prepare.add_argument(
        "--block-mb",
        type=int,
        default=32,
        help="raw megabytes parsed per block, at least 1; bounds memory (default 32)",
    )


def add_train_command(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        allow_abbrev=False,  # --nproc must be spelled out: it is removed before the ranks see the command
        help="train a CTR model with a table strategy, tracked in MLflow",
        description="Train a CTR model on a prepared cache with the table strategy of a TOML spec (see "
        "tables/). Embeddings train with fused row-wise Adagrad through torchrec; the dense part with "
        "Adam or Adagrad. Reports AUC and log loss on validation (each epoch) and test (at the end).",
    )
    train.add_argument("--data", type=Path, required=True, help="prepared cache directory (from `recsys data prepare`)")
    train.add_argument("--tables", type=Path, required=True, help="table spec, e.g. tables/hashing-10x.toml")
    train.add_argument("--model", default="dlrm", help="model name (default dlrm)")
    train.add_argument("--epochs", type=int, default=1, help="most epochs to train (default 1)")
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a better validation AUC and test the best epoch's weights "
        "(default: train every epoch, test the last)",
    )
    train.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        help="multiply every learning rate by this after an epoch without a better validation AUC, e.g. 0.1 "
        "(default: constant rates)",
    )
    train.add_argument("--batch-size", type=int, default=4096)
    train.add_argument("--dense-optimizer", choices=["adam", "adagrad"], default="adam")
    train.add_argument("--dense-lr", type=float, default=1e-3, help="learning rate of the dense layers (default 1e-3)")
    train.add_argument(
        "--sparse-lr",
        type=float,
        default=0.05,
        help="learning rate of the fused row-wise Adagrad on tables (default 0.05)",
    )
    train.add_argument(
        "--sparse-optimizer",
        choices=["rowwise_adagrad", "adagrad", "sgd"],
        default="rowwise_adagrad",
        help="table optimizer, fused into backward (default rowwise_adagrad: one state per row; adagrad keeps "
        "one per weight, so column-wise sharding gives exactly the single-process result)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes to train with on this machine, the tables sharded over them (launches torchrun; "
        "default 1). Under torchrun itself, leave it out.",
    )
    train.add_argument(
        "--sharding",
        choices=["auto", "table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"],
        default="auto",
        help="how tables are split over processes (default auto: whole tables placed by torchrec's planner, "
        "row-wise where they do not fit; data_parallel copies every table to every process and all-reduces whole "
        "tables). A table spec may override single tables: sharding = { C3 = 'row_wise' }",
    )
    train.add_argument(
        "--rank-memory",
        type=byte_size,
        help="bytes of tables and optimizer state one process may hold, e.g. 2GiB or 500MB (default: no limit)",
    )
    train.add_argument("--bottom-mlp", type=int_list, help="DLRM bottom MLP widths, e.g. 512,256")
    train.add_argument("--top-mlp", type=int_list, help="DLRM top MLP widths, e.g. 512,256")
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="write a checkpoint here after every epoch (verified by checksums when read back); a directory "
        "holding another run's checkpoints is refused unless --resume or --overwrite",
    )
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoints another run left in --checkpoint-dir (nothing else there is touched)",
    )
    train.add_argument(
        "--keep",
        choices=["best,last", "all"],
        default="best,last",
        help="which epochs' checkpoints to keep: the best (validation AUC) and the last (default), or all",
    )
    train.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite file mlflow.db here)"
    )
    train.add_argument("--experiment", default="recsys", help="MLflow experiment name (default recsys)")
    train.add_argument("--run-name", help="MLflow run name")
    train.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_synth(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from recsys.data.synth import SynthConfig, write_synthetic

    config = SynthConfig(rows=arguments.rows, cardinality_scale=arguments.cardinality_scale, seed=arguments.seed)
    with tqdm(total=config.rows, unit="rows", unit_scale=True, desc="synth") as bar:
        write_synthetic(config, arguments.output, on_rows=bar.update)
    print(f"wrote {config.rows:,} rows to {arguments.output}")


def run_prepare(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from recsys.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        split=arguments.split,
        skip_bad_rows=arguments.skip_bad_rows,
        overwrite=arguments.overwrite,
        block_bytes=arguments.block_mb << 20,
        format=arguments.format,
    )
    unknown_size = any(path.suffix == ".gz" or path.is_dir() for path in arguments.inputs)
    total_bytes = None if unknown_size else sum(path.stat().st_size for path in arguments.inputs if path.is_file())
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare (uncompressed bytes)") as bar:
        rows = 0

        def on_block(block_rows: int, raw_bytes: int) -> None:
            nonlocal rows
            rows += block_rows
            bar.update(raw_bytes)
            bar.set_postfix(rows=f"{rows:,}")

        cache = prepare(arguments.inputs, arguments.output, options, on_block=on_block)
    meta = cache.meta
    splits = ", ".join(f"{name} {count:,}" for name, count in meta["splits"].items())
    print(f"prepared {arguments.output}: {splits} rows in {meta['seconds']:.1f} s")
    if meta["bad_rows"]["skipped"]:
        print(meta["bad_rows"]["summary"])


def launch_processes(arguments: argparse.Namespace, argv: list[str]) -> int:
    """Run this same `recsys train` command under torchrun with `--nproc` processes on this machine.

    The spec and the data are checked here first, so that a mistake is one line, not one per rank.
    """
    import subprocess

    from recsys.config import ConfigError
    from recsys.data.cache import PreparedCache
    from recsys.tables import load_spec

    try:
        load_spec(arguments.tables)
        PreparedCache.open(arguments.data)
    except (ConfigError, *EXPECTED_ERRORS) as error:
        print(f"recsys train: error: {error}", file=sys.stderr)
        return 2

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of its own: runs side by side do not collide
        f"--nproc-per-node={arguments.nproc}",
        "-m",
        "recsys",
        *without_nproc(argv),
    ]
    return subprocess.call(command)


def without_nproc(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--nproc":
            skip = True
        elif not argument.startswith("--nproc="):
            kept.append(argument)
    return kept


def run_train(arguments: argparse.Namespace) -> None:
    from recsys.train.config import TrainConfig
    from recsys.train.distributed import close_process_group, is_main_process
    from recsys.workflow import train_and_track

    config = TrainConfig(
        epochs=arguments.epochs,
        patience=arguments.patience,
        lr_decay=arguments.lr_decay,
        batch_size=arguments.batch_size,
        dense_optimizer=arguments.dense_optimizer,
        dense_learning_rate=arguments.dense_lr,
        sparse_learning_rate=arguments.sparse_lr,
        sparse_optimizer=arguments.sparse_optimizer,
        sharding=arguments.sharding,
        rank_memory=arguments.rank_memory,
        seed=arguments.seed,
        checkpoint_dir=str(arguments.checkpoint_dir) if arguments.checkpoint_dir else None,
        resume=arguments.resume,
        overwrite=arguments.overwrite,
        keep=arguments.keep,
        progress=not arguments.no_progress,
    )
    overrides = {
        name: value for name, value in (("bottom_mlp", arguments.bottom_mlp), ("top_mlp", arguments.top_mlp)) if value
    }
    result, run_id = train_and_track(
        data=arguments.data,
        tables=arguments.tables,
        model=arguments.model,
        config=config,
        model_overrides=overrides,
        tracking=not arguments.no_tracking,
        tracking_uri=arguments.tracking_uri,
        experiment=arguments.experiment,
        run_name=arguments.run_name,
    )
    if "WORLD_SIZE" in os.environ:  # under torchrun: leave the group before exit (see close_process_group)
        close_process_group()
    if is_main_process():
        for name, value in result.metrics.items():
            print(f"{name:>30}: {value:.6g}")
        memory = result.memory
        print(f"{'table/total_bytes':>30}: {memory.total_bytes:,} ({memory.compression:.2f}x smaller than full)")
        if run_id:
            print(f"MLflow run {run_id}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parser().parse_args(argv)
    if arguments.command == "train" and arguments.nproc != 1:
        if arguments.nproc < 1:
            print(f"recsys train: error: --nproc must be at least 1, got {arguments.nproc}", file=sys.stderr)
            return 2
        if "WORLD_SIZE" in os.environ:
            print("recsys train: error: --nproc under torchrun: give the process count to torchrun", file=sys.stderr)
            return 2
        quiet_libraries()
        return launch_processes(arguments, argv)
    quiet_libraries()
    from recsys.config import ConfigError
    from recsys.tracking import TrackingUnavailable

    handlers = {
        ("data", "synth"): run_synth,
        ("data", "prepare"): run_prepare,
        ("train", None): run_train,
        ("sweep", None): run_sweep_command,
        ("report", None): run_report_command,
        ("export", None): run_export,
        ("serve", None): run_serve,
        ("predict", None): run_predict,
        ("demo", None): run_demo,
    }
    try:
        handlers[(arguments.command, getattr(arguments, "data_command", None))](arguments)
    except (ConfigError, TrackingUnavailable, *EXPECTED_ERRORS) as error:
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"recsys {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def run_demo(arguments: argparse.Namespace) -> None:
    from recsys.demo import DemoOptions, run

    run(
        DemoOptions(
            workdir=arguments.workdir,
            rows=arguments.rows,
            cardinality_scale=arguments.cardinality_scale,
            tracking_uri=arguments.tracking_uri,
        )
    )
