"""`recsys report`: a sweep's memory-against-AUC comparison as plots and tables.

Reads the finished child runs of the sweep's parent run, averages every (model, strategy,
compression) over its seeds, and writes into experiments/results/<name>/ (and logs to the parent):

    results.csv, results.md     mean ± std of test AUC and log loss, bytes, compression, samples/s
    pareto_<model>.png          test AUC and log loss against total bytes (log scale), a line per
                                strategy through its budgets, error bars over seeds

On the parent run the figures go through `log_figure` and the table also through `log_table`
(report/results_table.json), so the artifact view shows both; the parent gets summary metrics.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from recsys.sweep.runner import PARENT_TAG, child_runs, summarize_parent
from recsys.tracking import connect, resolve_tracking_uri

DEFAULT_OUTPUT = Path("experiments/results")
MARKERS = "os^D"
METRICS = ("test/auc", "test/logloss", "table/total_bytes", "table/compression", "train/samples_per_s")


@dataclass(frozen=True)
class Row:
    """One configuration over its seeds."""

    model: str
    strategy: str
    budget: str
    """`full`, `10x`, ...: the budget the runs were given (`achieved_compression` is what they got)."""
    seeds: int
    auc: tuple[float, float]
    logloss: tuple[float, float]
    total_bytes: float
    achieved_compression: float
    samples_per_s: float


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(client, experiment_id: str, parent: str) -> list[dict]:
    """Tags and metrics of the sweep's finished child runs."""
    runs = child_runs(client, experiment_id, parent, "FINISHED")
    return [
        {
            "model": run.data.tags.get("model", ""),
            "strategy": run.data.tags.get("strategy", ""),
            "budget": budget_of(run.data.tags),
            **{name: run.data.metrics[name] for name in METRICS if name in run.data.metrics},
        }
        for run in runs
        if all(name in run.data.metrics for name in METRICS[:3])
    ]


def budget_of(tags: dict[str, str]) -> str:
    """A run's budget tag; runs of sweeps before it existed carry the budget as tag `compression`."""
    if "budget" in tags:
        return tags["budget"]
    return f"{tags['compression']}x" if tags.get("compression") else "full"


def summarize(runs: list[dict]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["model"], run["strategy"], run["budget"])].append(run)
    rows = [
        Row(
            model=model,
            strategy=strategy,
            budget=budget,
            seeds=len(group),
            auc=mean_and_spread([run["test/auc"] for run in group]),
            logloss=mean_and_spread([run["test/logloss"] for run in group]),
            total_bytes=statistics.fmean(run["table/total_bytes"] for run in group),
            achieved_compression=statistics.fmean(run.get("table/compression", 0.0) for run in group),
            samples_per_s=statistics.fmean(run.get("train/samples_per_s", 0.0) for run in group),
        )
        for (model, strategy, budget), group in groups.items()
    ]
    return sorted(rows, key=lambda row: (row.model, row.strategy, -row.total_bytes))


def table_text(rows: list[Row]) -> tuple[str, str]:
    """(CSV, Markdown) of the summary."""
    header = ["model", "strategy", "budget", "seeds", "test AUC", "test logloss", "total MB", "vs full", "samples/s"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*header[:4], "auc_mean", "auc_std", "logloss_mean", "logloss_std", "total_bytes", "compression"])
    markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * 4 + "---:|" * 5]
    for row in rows:
        budget = row.budget
        numbers = [*row.auc, *row.logloss, row.total_bytes, row.achieved_compression]
        writer.writerow([row.model, row.strategy, budget, row.seeds, *numbers])
        markdown.append(
            f"| {row.model} | {row.strategy} | {budget} | {row.seeds} | {row.auc[0]:.4f} ± {row.auc[1]:.4f} | "
            f"{row.logloss[0]:.4f} ± {row.logloss[1]:.4f} | {row.total_bytes / 1e6:,.2f} | "
            f"{row.achieved_compression:.1f}x | {row.samples_per_s:,.0f} |"
        )
    return buffer.getvalue(), "\n".join(markdown) + "\n"


def pareto_figure(rows: list[Row], model: str):
    """Test AUC and log loss against total bytes (log scale) for one model: a line, colour and legend
    entry per strategy through its budgets, error bars over seeds, the full table's AUC dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(12, 4.5))
    strategies = sorted({row.strategy for row in rows if row.model == model})
    for index, strategy in enumerate(strategies):
        chosen = [row for row in rows if row.model == model and row.strategy == strategy]
        points = sorted(chosen, key=lambda row: row.total_bytes)
        sizes = [row.total_bytes for row in points]
        for axis, metric in zip(axes, ("auc", "logloss")):
            values = [getattr(row, metric) for row in points]
            means, spreads = [mean for mean, _ in values], [spread for _, spread in values]
            marker = MARKERS[index // 10 % len(MARKERS)]  # colours repeat after ten strategies: markers differ
            drawn = axis.errorbar(sizes, means, yerr=spreads, marker=marker, capsize=3, label=strategy)
            if strategy == "full":  # the reference every budget is compared with
                axis.axhline(means[0], linestyle="--", alpha=0.5, color=drawn.lines[0].get_color())
    for axis, label in zip(axes, ("test AUC (higher is better)", "test log loss (lower is better)")):
        axis.set_xscale("log")
        axis.set_xlabel("total bytes of tables and indexes (log scale)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(title="strategy", fontsize="small", ncol=2 if len(strategies) > 6 else 1, loc="lower right")
    figure.suptitle(f"{model}: memory against quality")
    figure.tight_layout()
    return figure


def save_figure(figure, path: Path) -> None:
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=120)
    partial.replace(path)


def table_columns(rows: list[Row]) -> dict[str, list]:
    """The summary as columns, for `mlflow.log_table` (the UI's artifact view shows it as a table)."""
    return {
        "model": [row.model for row in rows],
        "strategy": [row.strategy for row in rows],
        "budget": [row.budget for row in rows],
        "seeds": [row.seeds for row in rows],
        "test_auc_mean": [row.auc[0] for row in rows],
        "test_auc_std": [row.auc[1] for row in rows],
        "test_logloss_mean": [row.logloss[0] for row in rows],
        "total_bytes": [row.total_bytes for row in rows],
        "compression": [row.achieved_compression for row in rows],
        "samples_per_s": [row.samples_per_s for row in rows],
    }


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def sweep_parent(client, experiment_id: str, name: str, uri: str) -> str:
    """The run id of sweep `name`'s parent run, or FileNotFoundError saying what to run."""
    parents = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = 'true'", max_results=1)
    if not parents:
        raise FileNotFoundError(f"no sweep named {name!r} in {uri}: run `recsys sweep experiments/{name}.toml` first")
    return parents[0].info.run_id


def sweep_rows(name: str, tracking_uri: str | None = None) -> list[Row]:
    """The summary rows of sweep `name` (its finished configurations over their seeds)."""
    uri = resolve_tracking_uri(tracking_uri)
    client, experiment_id = connect(uri, name)
    return summarize(collect(client, experiment_id, sweep_parent(client, experiment_id, name, uri)))


def run_report(name: str, tracking_uri: str | None = None, output_root: Path = DEFAULT_OUTPUT) -> Path:
    """Write and log the report of sweep `name`; returns the results directory."""
    uri = resolve_tracking_uri(tracking_uri)
    client, experiment_id = connect(uri, name)
    parent = sweep_parent(client, experiment_id, name, uri)
    rows = summarize(collect(client, experiment_id, parent))
    if not rows:
        raise FileNotFoundError(f"sweep {name!r} in {uri} has no finished runs yet")
    directory = output_root / name
    directory.mkdir(parents=True, exist_ok=True)
    csv_text, markdown = table_text(rows)
    write_atomically(directory / "results.csv", csv_text)
    write_atomically(directory / "results.md", markdown)
    for name in ("results.csv", "results.md"):
        client.log_artifact(parent, str(directory / name), "report")
    client.log_table(parent, table_columns(rows), "report/results_table.json")
    for model in sorted({row.model for row in rows}):
        figure = pareto_figure(rows, model)
        save_figure(figure, directory / f"pareto_{model}.png")
        client.log_figure(parent, figure, f"report/pareto_{model}.png")
        close_figure(figure)
    summarize_parent(client, experiment_id, parent)
    return directory


def close_figure(figure) -> None:
    from matplotlib import pyplot

    pyplot.close(figure)
