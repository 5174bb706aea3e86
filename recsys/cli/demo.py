"""`recsys demo`: a small sweep of DLRM with full and hashing tables on synthetic data, and its report.

The demo writes its experiment file (`<workdir>/demo.toml`: 1M synthetic rows, DLRM, `full` and
`hashing` at 10x and 100x, seed 0) and runs it as `recsys sweep` and `recsys report` would: the
runs land in MLflow under one parent run carrying the Pareto plot and the results table. Running
it again reuses the prepared data and skips the configurations that finished.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from recsys.cli.arguments import config_default, given_settings, output_directory

EXPERIMENT = "recsys-demo"
STRATEGIES = ("full", "hashing")
COMPRESSIONS = (10, 100)


def add_commands(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="synthetic data -> prepare -> sweep full and hashing -> Pareto report in MLflow",
        description="The end-to-end demo: a small sweep (experiment file written to WORKDIR/demo.toml) "
        "of DLRM with the full table and hashing at 10x and 100x less memory on synthetic Criteo-format "
        "data, tracked in MLflow, then its report: memory against AUC as a table, a Pareto plot and the "
        "same on the sweep's parent run in MLflow.",
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


def experiment_text(options: DemoOptions) -> str:
    """The demo's experiment file: what `recsys sweep` would run for it."""
    quoted = ", ".join(f'"{name}"' for name in STRATEGIES)
    return f"""# Written by `recsys demo`; run it again with `recsys sweep` and `recsys report` (name {EXPERIMENT}).
name = "{EXPERIMENT}"

[data]
synthetic_rows = {options.rows}
cardinality_scale = {options.cardinality_scale}
data_seed = {options.seed}

[grid]
models = ["dlrm"]
strategies = [{quoted}]
compressions = [{", ".join(str(value) for value in COMPRESSIONS)}]
seeds = [{options.seed}]

[train]
checkpoint_dir = {json.dumps(str((options.workdir / "checkpoints").resolve()))}

[tables]
embedding_dim = 16
"""


def run(options: DemoOptions) -> list:
    """Sweep, report and print; the report's rows (one per strategy and budget)."""
    from recsys.sweep.data import settings_key
    from recsys.sweep.report import run_report, sweep_rows, write_atomically
    from recsys.sweep.runner import run_sweep
    from recsys.sweep.spec import load_experiment
    from recsys.tracking import resolve_tracking_uri, ui_lines

    options.workdir.mkdir(parents=True, exist_ok=True)
    path = options.workdir / "demo.toml"
    write_atomically(path, experiment_text(options))
    cache_root = options.workdir / "caches"
    if (cache_root / settings_key(load_experiment(path).data) / "meta.json").exists():
        print(f"reusing the prepared data in {cache_root} (same synthetic settings)")
    tracking_uri = resolve_tracking_uri(options.tracking_uri)
    outcome = run_sweep(path, tracking_uri, cache_root)
    if outcome.failed:
        print(f"failed: {', '.join(outcome.failed)} (see the runs' recsys.error tags)")
    directory = run_report(EXPERIMENT, tracking_uri, options.workdir / "results")
    print()
    print((directory / "results.md").read_text())
    print(f"Plot: {directory / 'pareto_dlrm.png'}. In MLflow (experiment {EXPERIMENT!r}):")
    for line in ui_lines(tracking_uri, outcome.experiment_id, outcome.parent_run_id, "report/pareto_dlrm.png"):
        print(f"  {line}")
    recsys = Path(sys.executable).with_name("recsys")
    print(f"Export the model a run measured (for `recsys serve`) with: {recsys} export RUN_ID -o model/")
    return sweep_rows(EXPERIMENT, tracking_uri)
