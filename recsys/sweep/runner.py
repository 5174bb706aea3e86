"""`recsys sweep`: every configuration of an experiment as an MLflow child run of one parent run.

    experiment "criteo_synthetic"
      parent run "criteo_synthetic"  (tag recsys.sweep_parent; the experiment file as an artifact)
        child "dlrm/full/seed0", "dlrm/qr-10x/seed0", ...   (tags model, strategy, compression, seed,
                                                             recsys.config_hash)

Running the sweep again reuses the parent, marks KILLED the children an interrupted run left
RUNNING, and skips every configuration whose hash has a FINISHED child. With `checkpoint_dir` in
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
from recsys.tracking import MLflowTracker, connect, resolve_tracking_uri
from recsys.train.config import TrainConfig
from recsys.train.job import Job
from recsys.train.loop import train

PARENT_TAG = "recsys.sweep_parent"
HASH_TAG = "recsys.config_hash"
ERROR_TAG = "recsys.error"


@dataclass
class SweepOutcome:
    parent_run_id: str
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
    close_interrupted(client, experiment_id, parent)
    finished = finished_hashes(client, experiment_id, parent)
    outcome = SweepOutcome(parent)
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
    tags = {
        HASH_TAG: key,
        "seed": str(configuration.seed),
        "compression": "" if configuration.compression is None else f"{configuration.compression:g}",
        "configuration": configuration.label,
    }
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
            "model": configuration.model,
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
