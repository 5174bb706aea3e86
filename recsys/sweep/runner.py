"""`recsys sweep`: every configuration of an experiment as an MLflow child run of one parent run.

    experiment "criteo_synthetic"
      parent run "criteo_synthetic"  (tag recsys.sweep_parent; the experiment file as an artifact;
                                      the data as dataset inputs; summary metrics sweep/*)
        child "dlrm/full/seed0", "dlrm/qr-10x/seed0", ...   (tags model, strategy, budget, compression,
                                                             seed, embedding_dim, dataset,
                                                             recsys.config_hash)

Running the sweep again reuses the parent, marks KILLED the children an interrupted run left
RUNNING, and skips every configuration whose hash has a FINISHED child. When a configuration
finishes, its earlier killed or failed attempts are tagged `recsys.superseded_by` and their names
get " (superseded)". With `checkpoint_dir` in
[train], each configuration checkpoints under `<checkpoint_dir>/<configuration hash>/`, so no two
share a directory and an export of a child run takes that run's own weights. A configuration that fails
is recorded (status FAILED, tag `recsys.error`) and the sweep goes on; the next run tries it again.
"""

from __future__ import annotations

import dataclasses
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from recsys.config import to_toml
from recsys.sweep.data import DEFAULT_ROOT, prepared_cache
from recsys.sweep.spec import Configuration, Experiment, configurations, load_experiment
from recsys.sweep.summary import ConfigurationResult
from recsys.tracked_dataset import dataset_inputs
from recsys.tracking import MLflowTracker, connect, resolve_tracking_uri
from recsys.train.config import TrainConfig
from recsys.train.job import Job
from recsys.train.loop import train

PARENT_TAG = "recsys.sweep_parent"
HASH_TAG = "recsys.config_hash"
ERROR_TAG = "recsys.error"
SUPERSEDED_TAG = "recsys.superseded_by"
NEAR_BEST_AUC = 0.001
"""Runs within this much test AUC of a sweep's best count as equally good for its smallest-bytes summary."""


@dataclass
class SweepOutcome:
    parent_run_id: str
    experiment_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    results: list[ConfigurationResult] = field(default_factory=list)
    """The figures of the configurations finished in this run (those skipped ran before: see MLflow)."""


def run_sweep(path: str | Path, tracking_uri: str | None = None, cache_root: Path = DEFAULT_ROOT) -> SweepOutcome:
    """Run (or continue) the sweep of experiment file `path`."""
    experiment = load_experiment(path)
    planned = configurations(experiment)  # every spec is checked before anything runs
    uri = resolve_tracking_uri(tracking_uri)
    client, experiment_id = connect(uri, experiment.name)
    cache = prepared_cache(experiment.data, cache_root)
    parent = parent_run(client, experiment_id, experiment, Path(path))
    client.set_tag(parent, "dataset", cache.name)
    client.log_inputs(parent, datasets=dataset_inputs(cache))
    close_interrupted(client, experiment_id, parent)
    finished = finished_hashes(client, experiment_id, parent)
    outcome = SweepOutcome(parent, experiment_id)
    with tqdm(total=len(planned), unit="run", desc=f"sweep {experiment.name}") as bar:
        for configuration in planned:
            key = configuration.config_hash(experiment.data)
            if key in finished:
                outcome.skipped.append(configuration.label)
            else:
                bar.set_postfix_str(status(outcome, running=configuration.label))
                run_one(configuration, experiment, cache, uri, parent, key, outcome)
            bar.update(1)
            bar.set_postfix_str(status(outcome))
    client.set_tag(parent, "recsys.failed_configurations", str(len(outcome.failed)))
    summarize_parent(client, experiment_id, parent)
    client.set_terminated(parent, status="FINISHED" if not outcome.failed else "FAILED")
    return outcome


def status(outcome: SweepOutcome, running: str | None = None) -> str:
    text = f"done {len(outcome.done)}, skipped {len(outcome.skipped)}, failed {len(outcome.failed)}"
    return f"{text}, running {running}" if running else text


def run_one(
    configuration: Configuration,
    experiment: Experiment,
    cache,
    uri: str,
    parent: str,
    key: str,
    outcome: SweepOutcome,
) -> None:
    """Train and track one configuration; a failure is recorded in MLflow and in `outcome`, not raised."""
    tags = {HASH_TAG: key, "configuration": configuration.label}
    tracker = MLflowTracker(uri, experiment.name, configuration.label, parent_run_id=parent, extra_tags=tags)
    try:
        job = Job(
            cache=cache,
            spec=configuration.spec,
            model=configuration.model,
            config=own_checkpoints(configuration.train_config, key),
            model_overrides=dict(configuration.model_overrides),
            spec_text=to_toml(configuration.spec.to_dict()),
        )
        result = train(job, tracker)
    except Exception as error:  # any failure of one configuration is recorded; the sweep goes on
        message = "".join(traceback.format_exception_only(type(error), error)).strip()[:4000]
        record_failure(tracker, configuration, tags, message)
        outcome.failed[configuration.label] = message
        return
    outcome.done.append(configuration.label)
    outcome.results.append(ConfigurationResult.of(configuration, result))
    supersede_attempts(tracker.client, tracker.experiment_id, parent, key, tracker.run_id)
    tqdm.write(outcome.results[-1].line())


def own_checkpoints(config: TrainConfig, key: str) -> TrainConfig:
    """Each configuration checkpoints under `<checkpoint_dir>/<its hash>/`, replacing an earlier attempt's epochs."""
    if config.checkpoint_dir is None:
        return config
    directory = str(Path(config.checkpoint_dir) / key)
    return dataclasses.replace(config, checkpoint_dir=directory, overwrite=True, resume=False)


def record_failure(tracker: MLflowTracker, configuration: Configuration, tags: dict[str, str], message: str) -> None:
    """Tag the failed run with its error; a configuration that failed before its run began gets a run too."""
    client = tracker.client
    if tracker.run_id is None:
        run_tags = {
            **tags,
            "mlflow.parentRunId": tracker.parent_run_id,
            "strategy": configuration.spec.strategy,
            "budget": configuration.spec.budget_label(),
            "model": configuration.model,
            "seed": str(configuration.seed),
            "embedding_dim": str(configuration.spec.embedding_dim),
        }
        tracker.run_id = client.create_run(tracker.experiment_id, run_name=tracker.run_name, tags=run_tags).info.run_id
        client.set_terminated(tracker.run_id, status="FAILED")
    client.set_tag(tracker.run_id, ERROR_TAG, message)


def parent_run(client, experiment_id: str, experiment: Experiment, path: Path) -> str:
    """The sweep's parent run: the existing one, reopened, or a new one with the experiment file."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{PARENT_TAG}` = 'true' and attributes.run_name = '{experiment.name}'", max_results=1
    )
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run_id = client.create_run(experiment_id, run_name=experiment.name, tags={PARENT_TAG: "true"}).info.run_id
    client.log_text(run_id, path.read_text(), f"experiment/{path.name}")
    return run_id


def supersede_attempts(client, experiment_id: str, parent: str, key: str, run_id: str) -> None:
    """Mark the killed and failed earlier attempts of a configuration that has now finished: a tag naming
    the run that replaces them, and "(superseded)" after their names, so the runs table tells them apart."""
    earlier = [
        run
        for status in ("KILLED", "FAILED")
        for run in child_runs(client, experiment_id, parent, status)
        if run.data.tags.get(HASH_TAG) == key and SUPERSEDED_TAG not in run.data.tags
    ]
    for run in earlier:
        client.set_tag(run.info.run_id, SUPERSEDED_TAG, run_id)
        client.update_run(run.info.run_id, name=f"{run.info.run_name} (superseded)")
    if earlier:
        client.set_tag(run_id, "recsys.supersedes", ",".join(run.info.run_id for run in earlier))


def summarize_parent(client, experiment_id: str, parent: str) -> None:
    """Summary metrics on the parent run, so its collapsed row in the runs table says something."""
    finished = child_runs(client, experiment_id, parent, "FINISHED")
    for name, value in parent_summary([run.data.metrics for run in finished]).items():
        client.log_metric(parent, name, value)


def parent_summary(children: list[dict[str, float]], tolerance: float = NEAR_BEST_AUC) -> dict[str, float]:
    """The best test AUC of the children, and the smallest tables within `tolerance` of it (with that
    run's AUC and compression); nothing where no child has a test AUC and a size."""
    scored = [metrics for metrics in children if "test/auc" in metrics and "table/total_bytes" in metrics]
    if not scored:
        return {"sweep/finished_runs": float(len(children))}
    best = max(metrics["test/auc"] for metrics in scored)
    near = [metrics for metrics in scored if metrics["test/auc"] >= best - tolerance]
    smallest = min(near, key=lambda metrics: metrics["table/total_bytes"])
    return {
        "sweep/finished_runs": float(len(children)),
        "sweep/best_test_auc": best,
        "sweep/smallest_bytes_near_best": smallest["table/total_bytes"],
        "sweep/smallest_near_best_test_auc": smallest["test/auc"],
        "sweep/smallest_near_best_compression": smallest.get("table/compression", float("nan")),
    }


def close_interrupted(client, experiment_id: str, parent: str) -> None:
    """Mark KILLED the children an earlier, interrupted run of this sweep left RUNNING (they run again)."""
    for run in child_runs(client, experiment_id, parent, "RUNNING"):
        client.set_terminated(run.info.run_id, status="KILLED")


def finished_hashes(client, experiment_id: str, parent: str) -> set[str]:
    return {run.data.tags.get(HASH_TAG) for run in child_runs(client, experiment_id, parent, "FINISHED")}


def child_runs(client, experiment_id: str, parent: str, status: str) -> list:
    """The sweep's child runs of one status (FINISHED, RUNNING, FAILED, KILLED)."""
    return client.search_runs(
        [experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = '{status}'",
        max_results=50_000,
    )
