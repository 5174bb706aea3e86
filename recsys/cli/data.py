"""`recsys data synth` and `recsys data prepare`: arguments and what they print."""

from __future__ import annotations

import argparse

from recsys.cli.arguments import (
    non_negative_int,
    output_directory,
    output_file,
    positive_int,
    readable,
    split_argument,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    from recsys.data.formats import FORMATS
    from recsys.data.prepare import PrepareOptions
    from recsys.data.synth import MLPERF_CAP, PROFILES, SynthConfig
    from recsys.machine import available_cores

    defaults = PrepareOptions()

    data = commands.add_parser("data", help="make and prepare click-log data").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser(
        "synth",
        help="write synthetic Criteo-format data with a planted click model",
        description="Write rows in Criteo's raw format (label, I1..I13, C1..C26 hex) with Criteo Kaggle's or "
        "Terabyte's cardinality profile, Zipf-like value frequencies and labels from a hidden model with per-value "
        "effects and pairwise interactions. Deterministic for a seed, whatever the number of workers. With --days, "
        "one file per day, each day passing a share of every feature's ranks to new ids.",
    )
    synth.add_argument(
        "-o",
        "--output",
        type=output_file,
        required=True,
        help="output file (.tsv, or .tsv.gz to compress); with --days or --first-day, day d goes to its name with "
        "_d before the extension (day.tsv.gz -> day_0.tsv.gz, day_1.tsv.gz, ...)",
    )
    synth.add_argument(
        "--rows", type=positive_int, default=1_000_000, help="rows to write, per day with --days (default 1,000,000)"
    )
    synth.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="kaggle",
        help="per-feature vocabulary sizes: Criteo Kaggle's (33.8M ids in all) or Terabyte's (883M; default kaggle)",
    )
    synth.add_argument(
        "--cardinality-scale",
        type=float,
        default=1.0,
        help="multiple of the profile's vocabulary sizes (default 1): below 1 shrinks them (small ones keep "
        "theirs), above 1 grows them, up to 2^32 ids for the largest (423 for Kaggle, 14 for Terabyte)",
    )
    synth.add_argument(
        "--cap",
        type=positive_int,
        help=f"at most this many values per feature, as MLPerf caps Terabyte's at {MLPERF_CAP:,} (default: no cap)",
    )
    synth.add_argument("--days", type=positive_int, default=1, help="days to write, one file each (default 1)")
    synth.add_argument(
        "--first-day",
        type=non_negative_int,
        default=0,
        help="the first day to write: continue a log written earlier with the same settings (default 0)",
    )
    synth.add_argument(
        "--daily-churn",
        type=float,
        default=SynthConfig.daily_churn,
        help="share of each feature's ranks passing to a new id each day: drifting popularity, new ids "
        f"(default {SynthConfig.daily_churn})",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of the planted model and the rows (default 0)")
    synth.add_argument(
        "--workers",
        type=positive_int,
        default=available_cores(),
        help=f"processes making rows (default {available_cores()}, one per core)",
    )
    synth.add_argument("--overwrite", action="store_true", help="replace existing output files")
    synth.set_defaults(handler=run_synth)
    prepare = data.add_parser(
        "prepare",
        help="raw click logs (Criteo, Avazu, Frappe, MovieLens) -> prepared columnar cache with feature statistics",
        description="Stream raw files (plain, gzip, bzip2 or xz, told by their first bytes, in the order given) "
        "into a prepared parquet cache, split by row order into train/val/test, with id frequencies of the "
        "training split. Malformed rows stop the run with file and line, unless --skip-bad-rows. Formats: "
        + "; ".join(f"{name}: {raw_format.inputs}" for name, raw_format in FORMATS.items())
        + ".",
    )
    prepare.add_argument("inputs", type=readable, nargs="+", help="raw files, in chronological order")
    prepare.add_argument(
        "--format", choices=list(FORMATS), default=defaults.format, help=f"the raw format (default {defaults.format})"
    )
    prepare.add_argument(
        "--test",
        type=readable,
        nargs="+",
        default=(),
        metavar="FILE",
        help="files read after the inputs as the whole test split (then --split divides the inputs into train "
        "and validation: its default becomes 0.9,0.1,0)",
    )
    prepare.add_argument("-o", "--output", type=output_directory, required=True, help="cache directory to create")
    prepare.add_argument(
        "--split",
        type=split_argument,
        help="train,val,test by row order: fractions adding up to 1, or row counts adding up to the valid rows "
        f"(e.g. 51949,5773,0; default {','.join(map(str, defaults.split))}, or with --test "
        f"{','.join(map(str, TEST_FILES_SPLIT))})",
    )
    prepare.add_argument(
        "--shuffle",
        type=non_negative_int,
        metavar="SEED",
        help="shuffle the inputs' rows with this seed before the split: a random split instead of one by row "
        "order (rows are held in memory; --test files keep their order). Default: no shuffle",
    )
    prepare.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows and report them, instead of stopping at the first",
    )
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    prepare.add_argument(
        "--block-mb",
        type=positive_int,
        default=defaults.block_bytes >> 20,
        help=f"raw megabytes parsed per block, at least 1; bounds memory (default {defaults.block_bytes >> 20})",
    )
    prepare.add_argument(
        "--stats-memory-mb",
        type=positive_int,
        default=defaults.statistics_memory_bytes >> 20,
        help="memory each feature's id counting may hold, at least 64; a vocabulary too large for it is counted "
        f"exactly in hash partitions, one pass each (default {defaults.statistics_memory_bytes >> 20})",
    )
    prepare.set_defaults(handler=run_prepare)


def run_synth(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from recsys.data.synth import SynthConfig
    from recsys.data.synth_files import day_paths, write_synthetic

    config = SynthConfig(
        rows=arguments.rows,
        cardinality_scale=arguments.cardinality_scale,
        seed=arguments.seed,
        profile=arguments.profile,
        cap=arguments.cap,
        days=arguments.days,
        first_day=arguments.first_day,
        daily_churn=arguments.daily_churn,
    )
    existing = [str(path) for path in day_paths(arguments.output, config.days, config.first_day) if path.exists()]
    if existing and not arguments.overwrite:
        raise ValueError(
            f"-o: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "give --overwrite to replace, or another name"
        )
    with tqdm(total=config.rows * config.days, unit="rows", unit_scale=True, desc="synth") as bar:
        paths = write_synthetic(config, arguments.output, on_rows=bar.update, workers=arguments.workers)
    print(f"wrote {config.rows * config.days:,} rows to {', '.join(map(str, paths))}")


TEST_FILES_SPLIT = (0.9, 0.1, 0.0)
"""The split of the inputs when test files are given: train and validation only."""


def run_prepare(arguments: argparse.Namespace) -> None:
    from tqdm import tqdm

    from recsys.data.compressed import is_compressed
    from recsys.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        split=arguments.split or (TEST_FILES_SPLIT if arguments.test else PrepareOptions().split),
        test_paths=tuple(arguments.test),
        skip_bad_rows=arguments.skip_bad_rows,
        overwrite=arguments.overwrite,
        block_bytes=arguments.block_mb << 20,
        statistics_memory_bytes=arguments.stats_memory_mb << 20,
        format=arguments.format,
        shuffle=arguments.shuffle,
    )
    files = [*arguments.inputs, *arguments.test]
    unknown_size = any(path.is_dir() or is_compressed(path) for path in files)
    total_bytes = None if unknown_size else sum(path.stat().st_size for path in files if path.is_file())
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
