"""`recsys demo`: synthetic data -> prepare -> DLRM with full and hashing tables -> memory vs AUC.

Re-running reuses the synthetic file and the cache when their settings have not changed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.cli.arguments import config_default, given_settings, output_directory

if TYPE_CHECKING:
    from recsys.data.cache import PreparedCache

TABLES_DIRECTORY = Path(__file__).resolve().parents[2] / "tables"
DEMO_TABLES = ("full.toml", "hashing-10x.toml", "hashing-100x.toml")
EXPERIMENT = "recsys-demo"


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="synthetic data -> prepare -> train full and hashing -> memory-vs-AUC table",
        description="The end-to-end demo: writes synthetic Criteo-format data, prepares it, trains DLRM "
        "with the full table and hashing at 10x and 100x compression, tracks the runs in MLflow and "
        "prints memory against AUC.",
    )
    workdir, rows, scale = (config_default(DemoOptions, name) for name in ("workdir", "rows", "cardinality_scale"))
    demo.add_argument("--workdir", type=output_directory, default=workdir, help=f"where data goes (default {workdir})")
    demo.add_argument("--rows", type=int, default=rows, help=f"synthetic rows (default {rows:,})")
    demo.add_argument(
        "--cardinality-scale", type=float, default=scale, help=f"fraction of Criteo's vocabularies (default {scale})"
    )
    demo.add_argument("--tracking-uri", help="MLflow store (default: sqlite file mlflow.db here)")
    demo.set_defaults(handler=run_demo)


def run_demo(arguments: argparse.Namespace) -> None:
    run(DemoOptions(**given_settings(arguments, DemoOptions)))


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path = Path(".demo")
    rows: int = 1_000_000
    cardinality_scale: float = 0.02
    seed: int = 0
    tracking_uri: str | None = None


def prepared_data(options: DemoOptions) -> PreparedCache:
    """The demo's cache, made again only when the synthetic settings changed."""
    from tqdm import tqdm

    from recsys.data.cache import PreparedCache
    from recsys.data.prepare import PrepareOptions, prepare
    from recsys.data.synth import GENERATOR_VERSION, SynthConfig, write_synthetic

    options.workdir.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(rows=options.rows, cardinality_scale=options.cardinality_scale, seed=options.seed)
    raw, cache_path, stamp = (options.workdir / name for name in ("synthetic.tsv", "cache", "settings.json"))
    settings = json.dumps({**asdict(config), "generator_version": GENERATOR_VERSION}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == settings and (cache_path / "meta.json").exists():
        print(f"reusing {cache_path} (same synthetic settings)")
        return PreparedCache.open(cache_path)
    stamp.unlink(missing_ok=True)
    with tqdm(total=config.rows, unit="rows", unit_scale=True, desc="1/3 synth") as bar:
        write_synthetic(config, raw, on_rows=bar.update)
    with tqdm(total=config.rows, unit="rows", unit_scale=True, desc="2/3 prepare") as bar:
        cache = prepare([raw], cache_path, PrepareOptions(overwrite=True), on_block=lambda rows, _: bar.update(rows))
    raw.unlink()
    stamp.write_text(settings)
    return cache


def run(options: DemoOptions) -> list[dict]:
    from recsys.cli.workflow import train_and_track
    from recsys.tracking import resolve_tracking_uri
    from recsys.train.config import TrainConfig

    cache = prepared_data(options)
    tracking_uri = resolve_tracking_uri(options.tracking_uri)
    rows = []
    for index, table_file in enumerate(DEMO_TABLES):
        spec_path = TABLES_DIRECTORY / table_file
        print(f"3/3 train DLRM with {spec_path.name} ({index + 1}/{len(DEMO_TABLES)})")
        result, run_id = train_and_track(
            data=cache.path,
            tables=spec_path,
            model="dlrm",
            config=TrainConfig(seed=options.seed),
            tracking_uri=tracking_uri,
            experiment=EXPERIMENT,
            run_name=spec_path.stem,
        )
        rows.append({"tables": spec_path.stem, "run_id": run_id, **result.metrics, **result.memory.to_dict()})
    print()
    print(format_table(rows))
    print()
    print(f"The runs are in MLflow experiment {EXPERIMENT!r}. Open the UI with:")
    print(f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --port 5000")
    print("then browse http://127.0.0.1:5000")
    return rows


def format_table(rows: list[dict]) -> str:
    """Memory against AUC, one line per table spec."""
    header = f"{'tables':<16}{'total MB':>10}{'vs full':>9}{'test AUC':>10}{'logloss':>9}{'samples/s':>11}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['tables']:<16}{row['total_bytes'] / 1e6:>10.2f}{row['compression']:>8.1f}x"
            f"{row['test/auc']:>10.4f}{row['test/logloss']:>9.4f}{row['train/samples_per_s']:>11,.0f}"
        )
    return "\n".join(lines)
