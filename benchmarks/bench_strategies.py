"""Memory against AUC for every table preset: DLRM on synthetic Criteo-like data, several seeds.

Trains DLRM once per (preset, seed) on a synthetic cache with Criteo Kaggle's cardinality profile,
tracks every run in MLflow (experiment `strategies-synthetic`, tags `preset` and `seed`), skips
runs already finished there (so an interrupted sweep resumes), records failures and goes on, and
prints a Markdown table of mean and standard deviation over seeds.

    python benchmarks/bench_strategies.py [--rows 1000000] [--seeds 0 1 2] [--presets full qr-10x ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

from common import synthetic_cache  # noqa: E402

from recsys.cli.workflow import train_and_track  # noqa: E402
from recsys.tracking import MLflowTracker  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402

TABLES = Path(__file__).resolve().parents[1] / "tables"
EXPERIMENT = "strategies-synthetic"


def finished_runs(tracking_uri: str | None) -> dict[tuple[str, str], dict[str, float]]:
    """Metrics of finished runs in the experiment, by (preset, seed)."""
    tracker = MLflowTracker(tracking_uri, EXPERIMENT)
    runs = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'FINISHED'", max_results=10_000)
    return {(run.data.tags.get("preset", ""), run.data.tags.get("seed", "")): run.data.metrics for run in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cardinality-scale", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", help="preset names (default: every file in tables/)")
    parser.add_argument("--tracking-uri")
    arguments = parser.parse_args()
    cache = synthetic_cache(arguments.rows, arguments.cardinality_scale)
    presets = arguments.presets or sorted(path.stem for path in TABLES.glob("*.toml"))
    done = finished_runs(arguments.tracking_uri)
    results: dict[str, list[dict[str, float]]] = {preset: [] for preset in presets}
    failures = []
    for preset in presets:
        for seed in arguments.seeds:
            if (preset, str(seed)) in done:
                results[preset].append(done[(preset, str(seed))])
                continue
            print(f"{preset} seed {seed}", flush=True)
            try:
                result, _ = train_and_track(
                    data=cache.path,
                    tables=TABLES / f"{preset}.toml",
                    model="dlrm",
                    config=TrainConfig(seed=seed, progress=False),
                    tracking_uri=arguments.tracking_uri,
                    experiment=EXPERIMENT,
                    run_name=f"{preset}-seed{seed}",
                    extra_tags={"preset": preset, "seed": str(seed)},
                )
            except ValueError as error:
                failures.append(f"{preset} seed {seed}: {error}")
                continue
            results[preset].append({**result.metrics, **{f"table/{k}": v for k, v in result.memory.to_dict().items()}})
    print(markdown_table(results))
    for failure in failures:
        print(f"- failed: {failure}")


def markdown_table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| tables | seeds | total MB | vs full | test AUC | test logloss | train samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, runs in results.items():
        if not runs:
            continue
        auc = mean_std([run["test/auc"] for run in runs], 4)
        logloss = mean_std([run["test/logloss"] for run in runs], 4)
        speed = statistics.mean(run["train/samples_per_s"] for run in runs)
        memory = f"{runs[0]['table/total_bytes'] / 1e6:.2f} | {runs[0]['table/compression']:.1f}x"
        lines.append(f"| {preset} | {len(runs)} | {memory} | {auc} | {logloss} | {speed:,.0f} |")
    return "\n".join(lines)


def mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


if __name__ == "__main__":
    main()
