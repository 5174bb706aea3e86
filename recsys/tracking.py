"""MLflow tracking: a training listener that records params, metrics, the table spec and tags.

The store is a sqlite file `mlflow.db` in the working directory unless `--tracking-uri` or
`MLFLOW_TRACKING_URI` names another (for example a server, `http://127.0.0.1:5000`). The store is
checked when the tracker is made, failing fast, so an unreachable server stops the run before
training starts. Once training runs, a logging failure (a server restart, a network blip) does not
stop it: the tracker warns, keeps the points it could not send and sends them with the next batch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import flatten
from recsys.data.cache import PreparedCache
from recsys.tracked_dataset import dataset_inputs
from recsys.train.events import Listener, RunStart

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT = "recsys"
FLUSH_EVERY = 100
WRITE_CHECK_TAG = "recsys.store_writable"
"""Set on the experiment when the store is checked: proof that it takes writes."""
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
"""The tag (and value) MLflow's UI sets when a user picks "Machine learning": without it, MLflow 3
opens an experiment in GenAI mode (traces, tokens) instead of its runs table."""
VIEW_KEY = "recsys-memory-against-auc"
"""A saved view of the runs table (MLflow's "Views" menu, or `?viewStateShareKey=` in a link)."""
VIEW_COLUMNS = (
    "attributes.`Dataset`",
    "attributes.`Models`",
    "tags.`model`",
    "tags.`strategy`",
    "tags.`budget`",
    "tags.`compression`",
    "tags.`seed`",
    "metrics.`test/auc`",
    "metrics.`table/total_bytes`",
    "metrics.`val/auc`",
    "metrics.`train/samples_per_s`",
)
RUN_TOKEN_TAG = "recsys.run_token"
"""The training's token, also in each of its checkpoints (`progress.json` "run")."""
MAX_PARAM_LENGTH = 6000
MAX_PENDING_POINTS = 100_000
CHECK_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""While checking the store before training: fail within seconds instead of retrying for minutes."""


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or used; the message says which and what to do."""


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a local sqlite store go beside the database; a server chooses its own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block (values the user set win), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        os.environ.setdefault(name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(tracking_uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """An MlflowClient and the id of `experiment` (created if missing), or TrackingUnavailable.

    The store must take a write, not only answer a read: a tag is set on the experiment, so a store
    that is read-only (a locked file, a read-only server) is found now, before any training.
    """
    from mlflow.tracking import MlflowClient

    try:
        with environment(CHECK_ENVIRONMENT):
            client = MlflowClient(tracking_uri=tracking_uri)
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                experiment_id = found.experiment_id
            else:
                experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
            client.set_experiment_tag(experiment_id, WRITE_CHECK_TAG, "ok")
            tags = found.tags if found is not None else {}
            for key, value in ui_tags().items():
                if key not in tags:  # a user's own choice of kind or edit of the view stays
                    client.set_experiment_tag(experiment_id, key, value)
            return client, experiment_id
    except Exception as error:  # MLflow raises many kinds (connection, SQL, REST); all mean the same here
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {tracking_uri}: {type(error).__name__}: {str(error)[:300]}. "
            "Start the server or fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-tracking."
        ) from error


def ui_tags() -> dict[str, str]:
    """Experiment tags for MLflow's UI: the model-training kind, and the saved view that shows each run's
    strategy, budget, compression, bytes and test AUC, best first. Sorting by a metric also lays a
    sweep's child runs out flat (MLflow nests them under their parent only in date order)."""
    state = {
        "searchFilter": "",
        "orderByKey": "metrics.`test/auc`",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": list(VIEW_COLUMNS),
    }
    view = {"name": "memory against AUC (recsys)", "createdAt": 0, "updatedAt": 0, "state": json.dumps(state)}
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(view)}


def comparison_link(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The runs table of an experiment in the comparison view, in model-training mode.

    MLflow 3.17's UI takes its mode from its GenAI / Model training switch (kept in the browser,
    GenAI by default) or from `workflowType` in the address, not from the experiment's kind tag: a
    link must say it.
    """
    return f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def artifact_link(experiment_id: str, run_id: str, path: str, server: str = "http://127.0.0.1:5000") -> str:
    """One artifact of a run in MLflow's artifact view, in model-training mode."""
    return f"{server}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}?workflowType=machine_learning"


def ui_lines(tracking_uri: str, experiment_id: str, parent_run_id: str | None = None, figure: str = "") -> list[str]:
    """How to see an experiment in MLflow's UI: the command that serves a local store, the comparison
    link and, for a sweep with a report, its Pareto plot `figure` (an artifact path) on the parent run."""
    lines = []
    server = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None
    if server is None:
        mlflow = Path(sys.executable).with_name("mlflow")
        lines.append(f"open MLflow's UI with: {mlflow} ui --backend-store-uri {tracking_uri} --port 5000")
        server = "http://127.0.0.1:5000"
    lines.append(f"runs side by side, best test AUC first: {comparison_link(experiment_id, server)}")
    if parent_run_id is not None and figure:
        lines.append(f"Pareto plot on the parent run: {artifact_link(experiment_id, parent_run_id, figure, server)}")
    return lines


class MLflowTracker(Listener):
    """Records one training run in MLflow (create it on rank 0 only)."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None:
        self.extra_tags = dict(extra_tags or {})
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client, self.experiment_id = connect(self.tracking_uri, experiment)
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.pending: list[tuple[str, float, int]] = []
        self.failures = 0

    def on_start(self, start: RunStart) -> None:
        from mlflow.entities import Param

        compression = {"compression": f"{start.memory['compression']:.3g}"} if "compression" in start.memory else {}
        tags = {**start.tags, **compression, **self.extra_tags, RUN_TOKEN_TAG: start.run_token}
        if self.parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id
        self.run_id = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags).info.run_id
        params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flatten(start.params).items()]
        for begin in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[begin : begin + 100])
        memory = {f"table/{name}": value for name, value in start.memory.items()}
        memory["table/param_bytes"] = memory.pop("table/parameter_bytes")
        self.on_metrics(memory, step=0)
        if start.data_path:
            datasets = dataset_inputs(PreparedCache.open(start.data_path))
            self.attempt(lambda: self.client.log_inputs(self.run_id, datasets=datasets))
        if start.spec_text:
            self.client.log_text(self.run_id, start.spec_text, "tables.toml")
        if start.plan:
            self.client.log_text(self.run_id, start.plan, "sharding_plan.txt")

    def on_step(self, step: int, loss: float) -> None:
        self.pending.append(("train/loss", loss, step))
        if len(self.pending) >= FLUSH_EVERY:
            self.flush()

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.pending.extend((name, float(value), step) for name, value in metrics.items())
        self.flush()

    def on_checkpoint(self, path: str, epoch: int) -> None:
        self.attempt(lambda: self.client.set_tag(self.run_id, "recsys.checkpoint", str(Path(path).resolve())))

    def on_end(self, failed: bool) -> None:
        if self.run_id is None:
            return
        self.flush()
        self.attempt(lambda: self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED"))
        if self.pending:
            print(
                f"warning: {len(self.pending)} metric points of MLflow run {self.run_id} could not be recorded",
                file=sys.stderr,
            )

    def flush(self) -> None:
        """Send pending metric points; on failure keep them (up to a bound) for the next flush."""
        from mlflow.entities import Metric

        if self.run_id is None or not self.pending:
            return
        now = int(time.time() * 1000)
        points = [Metric(name, value, now, step) for name, value, step in self.pending]
        for begin in range(0, len(points), 1000):
            chunk = points[begin : begin + 1000]
            if not self.attempt(lambda chunk=chunk: self.client.log_batch(self.run_id, metrics=chunk)):
                self.pending = self.pending[begin:][-MAX_PENDING_POINTS:]
                return
        self.pending.clear()

    def attempt(self, action: Callable[[], object]) -> bool:
        """Run one logging call; a failure warns (once) instead of stopping training."""
        try:
            action()
            return True
        except Exception as error:  # any MLflow or network failure: training must go on
            self.failures += 1
            if self.failures == 1:
                print(
                    f"warning: MLflow logging to {self.tracking_uri} failed ({type(error).__name__}: "
                    f"{str(error)[:200]}); training goes on and logging is retried",
                    file=sys.stderr,
                )
            return False
