"""`recsys report`: a sweep's memory-against-AUC comparison as plots and tables.

Reads the finished child runs of the sweep's parent run, averages every (model, strategy,
compression) over its seeds, and writes into experiments/results/<name>/ (and logs to the parent):

    results.csv, results.md     mean ± std of test AUC and log loss, bytes, compression, samples/s
    pareto_<model>.png          test AUC and log loss against total bytes (log scale), a line per
                                strategy through its budgets, error bars over seeds
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from recsys.sweep.runner import PARENT_TAG, child_runs
from recsys.tracking import connect, resolve_tracking_uri

DEFAULT_OUTPUT = Path("experiments/results")
METRICS = ("test/auc", "test/logloss", "table/total_bytes", "table/compression", "train/samples_per_s")


@dataclass(frozen=True)
class Row:
    """One configuration over its seeds."""

    model: str
    strategy: str
    compression: str
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
            "compression": run.data.tags.get("compression", ""),
            **{name: run.data.metrics[name] for name in METRICS if name in run.data.metrics},
        }
        for run in runs
        if all(name in run.data.metrics for name in METRICS[:3])
    ]


def summarize(runs: list[dict]) -> list[Row]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run["model"], run["strategy"], run["compression"])].append(run)
    rows = [
        Row(
            model=model,
            strategy=strategy,
            compression=compression,
            seeds=len(group),
            auc=mean_and_spread([run["test/auc"] for run in group]),
            logloss=mean_and_spread([run["test/logloss"] for run in group]),
            total_bytes=statistics.fmean(run["table/total_bytes"] for run in group),
            achieved_compression=statistics.fmean(run.get("table/compression", 0.0) for run in group),
            samples_per_s=statistics.fmean(run.get("train/samples_per_s", 0.0) for run in group),
        )
        for (model, strategy, compression), group in groups.items()
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
        budget = f"{row.compression}x" if row.compression else "full"
        numbers = [*row.auc, *row.logloss, row.total_bytes, row.achieved_compression]
        writer.writerow([row.model, row.strategy, budget, row.seeds, *numbers])
        markdown.append(
            f"| {row.model} | {row.strategy} | {budget} | {row.seeds} | {row.auc[0]:.4f} ± {row.auc[1]:.4f} | "
            f"{row.logloss[0]:.4f} ± {row.logloss[1]:.4f} | {row.total_bytes / 1e6:,.2f} | "
            f"{row.achieved_compression:.1f}x | {row.samples_per_s:,.0f} |"
        )
    return buffer.getvalue(), "\n".join(markdown) + "\n"


def plot(rows: list[Row], model: str, path: Path) -> None:
    """Test AUC and log loss against total bytes for one model: a line per strategy, error bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(12, 4.5))
    strategies = sorted({row.strategy for row in rows if row.model == model})
    for strategy in strategies:
        chosen = [row for row in rows if row.model == model and row.strategy == strategy]
        points = sorted(chosen, key=lambda row: row.total_bytes)
        sizes = [row.total_bytes for row in points]
        for axis, metric in zip(axes, ("auc", "logloss")):
            values = [getattr(row, metric) for row in points]
            means, spreads = [mean for mean, _ in values], [spread for _, spread in values]
            drawn = axis.errorbar(sizes, means, yerr=spreads, marker="o", capsize=3, label=strategy)
            if strategy == "full":  # the reference every budget is compared with
                axis.axhline(means[0], linestyle="--", alpha=0.5, color=drawn.lines[0].get_color())
    for axis, label in zip(axes, ("test AUC (higher is better)", "test log loss (lower is better)")):
        axis.set_xscale("log")
        axis.set_xlabel("total bytes of tables and indexes (log scale)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"{model}: memory against quality")
    figure.tight_layout()
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=120)
    pyplot.close(figure)
    partial.replace(path)


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def run_report(name: str, tracking_uri: str | None = None, output_root: Path = DEFAULT_OUTPUT) -> Path:
    """Write and log the report of sweep `name`; returns the results directory."""
    uri = resolve_tracking_uri(tracking_uri)
    client, experiment_id = connect(uri, name)
    parents = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = 'true'", max_results=1)
    if not parents:
        raise FileNotFoundError(f"no sweep named {name!r} in {uri}: run `recsys sweep experiments/{name}.toml` first")
    parent = parents[0].info.run_id
    rows = summarize(collect(client, experiment_id, parent))
    if not rows:
        raise FileNotFoundError(f"sweep {name!r} in {uri} has no finished runs yet")
    directory = output_root / name
    directory.mkdir(parents=True, exist_ok=True)
    csv_text, markdown = table_text(rows)
    write_atomically(directory / "results.csv", csv_text)
    write_atomically(directory / "results.md", markdown)
    for model in sorted({row.model for row in rows}):
        plot(rows, model, directory / f"pareto_{model}.png")
    client.log_artifacts(parent, str(directory), "report")
    return directory
