"""One training run as the command line and the demo do it: load, check tracking first, train, record."""

from __future__ import annotations

import sys
from pathlib import Path

from recsys.config import read_toml, to_toml
from recsys.data.cache import PreparedCache
from recsys.tables import load_spec, spec_from_mapping
from recsys.tables.spec import TableSpec
from recsys.train.config import TrainConfig
from recsys.train.distributed import is_main_process, rank_and_world_size
from recsys.train.events import Broadcast, Listener, RunStart
from recsys.train.job import Job
from recsys.train.loop import TrainResult, train


class PlanPrinter(Listener):
    """Prints the sharding plan and bytes per rank when training starts (runs over several processes)."""

    def on_start(self, start: RunStart) -> None:
        print(f"sharding plan:\n{start.plan}", file=sys.stderr, flush=True)


def table_spec(path: Path, overrides: dict) -> tuple[TableSpec, str]:
    """The spec of the --tables file with `--set tables.KEY=VALUE` over it, and its text as recorded."""
    if not overrides:
        return load_spec(path), path.read_text()
    mapping = {**read_toml(path), **overrides}
    return spec_from_mapping(mapping, where=f"{path} with --set tables.*"), to_toml(mapping)


def train_and_track(
    data: Path,
    tables: Path,
    model: str,
    config: TrainConfig,
    model_overrides: dict | None = None,
    table_overrides: dict | None = None,
    tracking: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "recsys",
    run_name: str | None = None,
    parent_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> tuple[TrainResult, str | None]:
    """Train one model; with `tracking`, the MLflow store is checked before any work starts."""
    spec, spec_text = table_spec(Path(tables), table_overrides or {})
    cache = PreparedCache.open(data)
    listeners: list[Listener] = [PlanPrinter()] if is_main_process() and rank_and_world_size()[1] > 1 else []
    tracker = None
    if tracking and is_main_process():
        from recsys.tracking import MLflowTracker

        tracker = MLflowTracker(
            tracking_uri, experiment, run_name=run_name, parent_run_id=parent_run_id, extra_tags=extra_tags
        )
        listeners.append(tracker)
    job = Job(
        cache=cache,
        spec=spec,
        model=model,
        config=config,
        model_overrides=dict(model_overrides or {}),
        spec_text=spec_text,
    )
    result = train(job, Broadcast(listeners))
    return result, tracker.run_id if tracker else None
