"""`recsys sweep` and `recsys report`: arguments and what they print."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.arguments import TRACKING_HELP, existing_file, output_directory
from recsys.cli.threads import add_threads, use_threads


def add_commands(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run every configuration of an experiment file, tracked in MLflow",
        description="Run the grid of an experiment file (models x strategies x budgets x seeds, see "
        "experiments/) as MLflow child runs of one parent run. Finished configurations are skipped when the "
        "sweep runs again; a failing one is recorded with its error and the sweep goes on.",
    )
    sweep.add_argument("experiment", type=existing_file, help="experiment file, e.g. experiments/criteo_synthetic.toml")
    sweep.add_argument("--tracking-uri", help=TRACKING_HELP)
    sweep.add_argument(
        "--cache-dir",
        type=output_directory,
        default=Path(".recsys-cache"),
        help="where prepared data is kept (.recsys-cache)",
    )
    add_threads(sweep, "training")
    sweep.set_defaults(handler=run_sweep_command)
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
        "--output",
        type=output_directory,
        default=Path("experiments/results"),
        help="results root (default experiments/results)",
    )
    report.set_defaults(handler=run_report_command)


def run_sweep_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.runner import run_sweep
    from recsys.sweep.summary import results_table

    use_threads(arguments.threads)
    outcome = run_sweep(arguments.experiment, arguments.tracking_uri, arguments.cache_dir)
    if outcome.results:
        print(results_table(outcome.results))
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
