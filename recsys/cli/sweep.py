"""`recsys sweep` and `recsys report`: arguments and what they print."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.arguments import TRACKING_HELP, existing_file, output_directory, output_file, positive_int
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
    add_tune(commands)
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


def add_tune(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune",
        help="search one cell's settings with Optuna (validation AUC), each trial an MLflow child run",
        description="Search the settings of one cell of an experiment file (a model, a strategy and a budget, "
        "at the grid's first seed) with Optuna's TPE sampler, pruning trials whose validation AUC after an "
        "epoch (from [tune] prune_after, default 3, once 5 trials have finished) falls below the median of "
        "earlier trials'. The space is the file's [tune.space] (e.g. "
        '"train.sparse_learning_rate" = { low = 0.01, high = 0.5, log = true }, "train.batch_size" = [1024, '
        "4096]; names as in --set of recsys train), by default the learning rates, init_std and dropout. The "
        "best trial is written as a one-cell experiment file for `recsys sweep` (all the grid's seeds).",
    )
    tune.add_argument("experiment", type=existing_file, help="experiment file, e.g. experiments/frappe.toml")
    tune.add_argument("--trials", type=positive_int, help="trials to run (default: [tune] trials, else 20)")
    tune.add_argument("--model", help="the model to tune (default: [tune] model, else the grid's first)")
    tune.add_argument("--strategy", help="the table strategy to tune (default: [tune] strategy, else the grid's first)")
    tune.add_argument(
        "--compression", type=float, help="the budget of a compressed strategy (default: the grid's first)"
    )
    tune.add_argument(
        "--output",
        type=output_file,
        help="where the best configuration goes (default <experiment>_tuned.toml beside the experiment; "
        "an existing file is refused)",
    )
    tune.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")
    tune.add_argument("--tracking-uri", help=TRACKING_HELP)
    tune.add_argument(
        "--cache-dir", type=output_directory, default=Path(".recsys-cache"), help="where prepared data is kept"
    )
    add_threads(tune, "training")
    tune.set_defaults(handler=run_tune_command)


def run_tune_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.tune import run_tune

    use_threads(arguments.threads)
    outcome = run_tune(
        arguments.experiment,
        trials=arguments.trials,
        output=arguments.output,
        model=arguments.model,
        strategy=arguments.strategy,
        compression=arguments.compression,
        tracking_uri=arguments.tracking_uri,
        cache_root=arguments.cache_dir,
        sampler_seed=arguments.sampler_seed,
    )
    pruned = sum(trial.state.startswith("pruned") for trial in outcome.trials)
    failed = sum(trial.state.startswith("failed") for trial in outcome.trials)
    finished = len(outcome.trials) - pruned - failed
    print(f"{len(outcome.trials)} trials: {finished} finished, {pruned} pruned, {failed} failed")
    print(outcome.best.line(None).replace(": finished,", ": best,", 1))
    print(f"wrote {outcome.output}; parent run {outcome.parent_run_id}; next: recsys sweep {outcome.output}")


def run_sweep_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.runner import run_sweep
    from recsys.sweep.summary import results_table
    from recsys.tracking import resolve_tracking_uri, ui_lines

    use_threads(arguments.threads)
    outcome = run_sweep(arguments.experiment, arguments.tracking_uri, arguments.cache_dir)
    if outcome.results:
        print(results_table(outcome.results))
    print(f"done {len(outcome.done)}, skipped {len(outcome.skipped)} (finished before), failed {len(outcome.failed)}")
    for label, message in outcome.failed.items():
        print(f"  failed {label}: {message.splitlines()[-1]}")
    print(f"parent run {outcome.parent_run_id}; next: recsys report {arguments.experiment}")
    for line in ui_lines(resolve_tracking_uri(arguments.tracking_uri), outcome.experiment_id):
        print(line)


def run_report_command(arguments: argparse.Namespace) -> None:
    from recsys.sweep.report import run_report, sweep_parent
    from recsys.sweep.spec import load_experiment
    from recsys.tracking import connect, resolve_tracking_uri, ui_lines

    name = arguments.experiment
    if name.endswith(".toml"):
        name = load_experiment(name).name
    directory = run_report(name, arguments.tracking_uri, arguments.output)
    print((directory / "results.md").read_text())
    print(f"wrote {directory}/ (results.csv, results.md, pareto_*.png), also logged to the sweep's parent run")
    uri = resolve_tracking_uri(arguments.tracking_uri)
    client, experiment_id = connect(uri, name)
    figure = f"report/{min(path.name for path in directory.glob('pareto_*.png'))}"
    for line in ui_lines(uri, experiment_id, sweep_parent(client, experiment_id, name, uri), figure):
        print(line)
