"""One Pareto plot of every strategy from the reports of several sweeps on the same data (issue 19).

Each sweep's `recsys report` writes `experiments/results/<name>/results.csv`; this joins them (a
strategy and budget found in more than one keeps the later file's row) and draws test AUC and log
loss against bytes with the report's own figure.

    python benchmarks/plot_frontier.py experiments/results/frontier \\
        experiments/results/criteo_synthetic/results.csv experiments/results/criteo_synthetic_new/results.csv ...
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from recsys.sweep.report import Row, close_figure, pareto_figure, save_figure


def rows_of(path: Path) -> list[Row]:
    with path.open(newline="") as handle:
        return [
            Row(
                model=record["model"],
                strategy=record["strategy"],
                budget=record["budget"],
                seeds=int(record["seeds"]),
                auc=(float(record["auc_mean"]), float(record["auc_std"])),
                logloss=(float(record["logloss_mean"]), float(record["logloss_std"])),
                total_bytes=float(record["total_bytes"]),
                achieved_compression=float(record["compression"]),
                samples_per_s=0.0,
            )
            for record in csv.DictReader(handle)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="directory for pareto_<model>.png")
    parser.add_argument("results", type=Path, nargs="+", help="results.csv files of `recsys report`")
    arguments = parser.parse_args()
    joined: dict[tuple[str, str, str], Row] = {}
    for path in arguments.results:
        for row in rows_of(path):
            joined[(row.model, row.strategy, row.budget)] = row
    rows = list(joined.values())
    arguments.output.mkdir(parents=True, exist_ok=True)
    for model in sorted({row.model for row in rows}):
        path = arguments.output / f"pareto_{model}.png"
        figure = pareto_figure(rows, model)
        save_figure(figure, path)
        close_figure(figure)
        chosen = [row for row in rows if row.model == model]
        print(f"{model}: {len(chosen)} points of {len({row.strategy for row in chosen})} strategies -> {path}")


if __name__ == "__main__":
    main()
