"""`recsys train`: arguments, one process or several (torchrun), and what it prints.

The options that are training settings have the names of `TrainConfig`'s fields (`dest`) and no
defaults of their own: the options given are checked by the same `from_mapping` as an experiment
file's [train] table, and everything else keeps the dataclass's default, quoted in --help.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from recsys.cli.arguments import (
    TRACKING_HELP,
    byte_size,
    config_default,
    existing_directory,
    existing_file,
    given_settings,
    int_list,
    output_directory_name,
)
from recsys.cli.overrides import Overrides, parsed_setting
from recsys.cli.threads import add_threads, use_threads
from recsys.train.config import TrainConfig

SHARDING_TYPES = ["auto", "table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]
FLAGS: dict[str, str] = {}
"""TrainConfig field -> its option, to name the option in an error."""


def default(name: str) -> str:
    return f"(default {config_default(TrainConfig, name)})"


def setting(train: argparse.ArgumentParser, flag: str, name: str, help: str, **options) -> None:
    """An option filling TrainConfig field `name`; absent unless given, so the dataclass's default applies."""
    FLAGS[name] = flag
    if options.get("action") is None and "choices" not in options:
        options["metavar"] = flag.removeprefix("--").upper().replace("-", "_")
    train.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=help, **options)


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        allow_abbrev=False,  # --nproc must be spelled out: it is removed before the ranks see the command
        help="train a CTR model with a table strategy, tracked in MLflow",
        description="Train a CTR model on a prepared cache with the table strategy of a TOML spec (see "
        "tables/). Embeddings train with fused row-wise Adagrad through torchrec; the dense part with "
        "Adam or Adagrad. Reports AUC and log loss on validation (each epoch) and test (at the end).",
    )
    train.set_defaults(handler=run_train)
    train.add_argument(
        "--data", type=existing_directory, required=True, help="prepared cache directory (from `recsys data prepare`)"
    )
    train.add_argument("--tables", type=existing_file, required=True, help="table spec, e.g. tables/hashing-10x.toml")
    train.add_argument("--model", default="dlrm", help="model name (default dlrm)")
    add_settings(train)
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes to train with on this machine, the tables sharded over them (launches torchrun; "
        "default 1). Under torchrun itself, leave it out.",
    )
    add_threads(train, "training, per process")
    train.add_argument(
        "--set",
        dest="settings",
        metavar="SECTION.KEY=VALUE",
        type=parsed_setting,
        action="append",
        help="any setting an experiment file can give, for this run: model.KEY (the model's config, e.g. "
        "model.dropout=0.2, model.hidden=[400,400]), tables.KEY (over the --tables file, e.g. "
        "tables.init_std=0.01), train.KEY (a training setting); VALUE is a TOML value; repeatable",
    )
    train.add_argument("--bottom-mlp", type=int_list, help="DLRM bottom MLP widths, e.g. 512,256")
    train.add_argument("--top-mlp", type=int_list, help="DLRM top MLP widths, e.g. 512,256")
    train.add_argument("--tracking-uri", help=TRACKING_HELP)
    train.add_argument("--experiment", default="recsys", help="MLflow experiment name (default recsys)")
    train.add_argument("--run-name", help="MLflow run name")
    train.add_argument("--no-tracking", action="store_true", help="do not record the run in MLflow")


def add_settings(train: argparse.ArgumentParser) -> None:
    """The options that are `TrainConfig` fields."""
    setting(train, "--epochs", "epochs", f"most epochs to train {default('epochs')}", type=int)
    setting(
        train,
        "--patience",
        "patience",
        "stop after this many epochs without a better validation AUC and test the best epoch's weights "
        "(default: train every epoch, test the last)",
        type=int,
    )
    setting(
        train,
        "--lr-decay",
        "lr_decay",
        "multiply every learning rate by this after an epoch without a better validation AUC (reduce on "
        "plateau); 1 keeps them constant (default: 0.1 with --patience, as FuxiCTR, else 1)",
        type=float,
    )
    setting(
        train,
        "--clip-norm",
        "clip_norm",
        "scale the dense gradients (dense layers, data-parallel tables) down to this total L2 norm when "
        "larger, e.g. 10 (default: no clipping)",
        type=float,
    )
    setting(train, "--batch-size", "batch_size", f"rows per training step {default('batch_size')}", type=int)
    setting(
        train,
        "--dense-optimizer",
        "dense_optimizer",
        f"optimizer of the dense layers {default('dense_optimizer')}",
        choices=["adam", "adagrad"],
    )
    setting(
        train,
        "--dense-lr",
        "dense_learning_rate",
        f"learning rate of the dense layers {default('dense_learning_rate')}",
        type=float,
    )
    setting(
        train,
        "--sparse-lr",
        "sparse_learning_rate",
        f"learning rate of the fused table optimizer {default('sparse_learning_rate')}",
        type=float,
    )
    setting(
        train,
        "--sparse-optimizer",
        "sparse_optimizer",
        f"table optimizer, fused into backward {default('sparse_optimizer')}: rowwise_adagrad keeps one state "
        "per row, adagrad one per weight (so column-wise sharding gives exactly the single-process result); adam "
        "(Adam on dense gradients, every row every step) needs --sharding data_parallel",
        choices=["rowwise_adagrad", "adagrad", "sgd", "adam"],
    )
    setting(
        train,
        "--sparse-weight-decay",
        "sparse_weight_decay",
        f"L2 weight decay of the tables {default('sparse_weight_decay')}; needs --sharding data_parallel "
        "(fbgemm's fused CPU kernels ignore weight decay)",
        type=float,
    )
    setting(train, "--seed", "seed", f"seed of the model and the batch order {default('seed')}", type=int)
    setting(
        train,
        "--sharding",
        "sharding",
        f"how tables are split over processes {default('sharding')}: auto places whole tables by torchrec's "
        "planner, row-wise where they do not fit; data_parallel copies every table to every process and "
        "all-reduces whole tables. A table spec may override single tables: sharding = { C3 = 'row_wise' }",
        choices=SHARDING_TYPES,
    )
    setting(
        train,
        "--rank-memory",
        "rank_memory",
        "bytes of tables and optimizer state one process may hold, e.g. 2GiB or 500MB (default: no limit)",
        type=byte_size,
    )
    add_checkpoint_settings(train)
    setting(train, "--no-progress", "progress", "no progress bar", action="store_false")


def add_checkpoint_settings(train: argparse.ArgumentParser) -> None:
    setting(
        train,
        "--checkpoint-dir",
        "checkpoint_dir",
        "write a checkpoint here after every epoch (verified by checksums when read back); a directory "
        "holding another run's checkpoints is refused unless --resume or --overwrite",
        type=output_directory_name,
    )
    setting(train, "--resume", "resume", "continue from the latest checkpoint in --checkpoint-dir", action="store_true")
    setting(
        train,
        "--overwrite",
        "overwrite",
        "replace the checkpoints another run left in --checkpoint-dir (nothing else there is touched)",
        action="store_true",
    )
    setting(
        train,
        "--keep",
        "keep",
        f"which epochs' checkpoints to keep: the best (validation AUC) and the last, or all {default('keep')}",
        choices=["best,last", "all"],
    )


def train_config(arguments: argparse.Namespace) -> TrainConfig:
    """The settings given on the command line over TrainConfig's defaults, checked like a [train] table."""
    from recsys.config import ConfigError, from_mapping

    given = given_settings(arguments, TrainConfig)
    settings = Overrides.of(getattr(arguments, "settings", None)).train
    both = sorted(set(given) & set(settings))
    if both:
        raise ConfigError(f"{FLAGS[both[0]]} and --set train.{both[0]} both given; give one")
    try:
        return from_mapping(TrainConfig, {**given, **settings}, "options")
    except ConfigError as error:
        message = str(error).removeprefix("options: ")
        for name, flag in FLAGS.items():
            message = re.sub(rf"'?\b{name}\b'?", flag, message)
        raise ConfigError(message) from None


def launch_processes(arguments: argparse.Namespace, argv: list[str]) -> int:
    """Run this same `recsys train` command under torchrun with `--nproc` processes on this machine.

    The spec and the data are checked here first, so that a mistake is one line, not one per rank.
    """
    import subprocess

    from recsys.cli import EXPECTED_ERRORS
    from recsys.config import ConfigError
    from recsys.data.cache import PreparedCache
    from recsys.tables import load_spec

    if arguments.nproc < 1:
        print(f"recsys train: error: --nproc must be at least 1, got {arguments.nproc}", file=sys.stderr)
        return 2
    if "WORLD_SIZE" in os.environ:
        print("recsys train: error: --nproc under torchrun: give the process count to torchrun", file=sys.stderr)
        return 2
    try:
        train_config(arguments)
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
    from recsys.cli.workflow import train_and_track
    from recsys.train.distributed import exit_distributed_process, is_main_process

    config = train_config(arguments)
    use_threads(arguments.threads, int(os.environ.get("WORLD_SIZE", "1")))
    settings = Overrides.of(arguments.settings)
    try:
        settings.check_model(arguments.model)
    except ValueError as error:
        from recsys.config import ConfigError

        raise ConfigError(str(error)) from None
    overrides = {
        name: value for name, value in (("bottom_mlp", arguments.bottom_mlp), ("top_mlp", arguments.top_mlp)) if value
    }
    overrides.update(settings.model)
    result, run_id = train_and_track(
        data=arguments.data,
        tables=arguments.tables,
        model=arguments.model,
        config=config,
        model_overrides=overrides,
        table_overrides=settings.tables,
        tracking=not arguments.no_tracking,
        tracking_uri=arguments.tracking_uri,
        experiment=arguments.experiment,
        run_name=arguments.run_name,
    )
    if is_main_process():
        for name, value in result.metrics.items():
            print(f"{name:>30}: {value:.6g}")
        if result.metrics.get("test/rows") == 0:
            print("no test metrics: the prepared data has no test rows (give --split a test part when preparing)")
        print(f"{'size':>30}: {result.shipped_memory.summary()}")
        if run_id:
            print(f"MLflow run {run_id}")
    if "WORLD_SIZE" in os.environ:  # skip the interpreter teardown in which gloo's threads can abort
        exit_distributed_process()
