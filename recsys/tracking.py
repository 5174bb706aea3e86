"""MLflow tracking: a training listener that records params, metrics, the table spec and tags.

The store is a sqlite file `mlflow.db` in the working directory unless `--tracking-uri` or
`MLFLOW_TRACKING_URI` names another (for example a server, `http://127.0.0.1:5000`). The store is
checked when the tracker is made, so an unreachable server stops the run before training starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from recsys.config import flatten
from recsys.train.events import Listener, RunStart

DEFAULT_EXPERIMENT = "recsys"
LOSS_FLUSH_EVERY = 100
MAX_PARAM_LENGTH = 6000


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


def connect(tracking_uri: str, experiment: str):
    """An MlflowClient and the experiment id, or TrackingUnavailable with the reason."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return client, found.experiment_id
        return client, client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri))
    except Exception as error:  # MLflow raises many kinds (connection, SQL, REST); all mean the same here
        raise TrackingUnavailable(
            f"cannot use the MLflow tracking store {tracking_uri}: {type(error).__name__}: {str(error)[:300]}. "
            "Start the server or fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-tracking."
        ) from error


class MLflowTracker(Listener):
    """Records one training run in MLflow (create it on rank 0 only)."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client, self.experiment_id = connect(self.tracking_uri, experiment)
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.pending_losses: list[tuple[int, float]] = []

    def on_start(self, start: RunStart) -> None:
        from mlflow.entities import Param

        tags = {f"recsys.{name}": value for name, value in start.tags.items()}
        tags.update(start.tags)
        if self.parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flatten(start.params).items()]
        for begin in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[begin : begin + 100])
        self.log_metrics(
            {
                "table/param_bytes": start.memory["parameter_bytes"],
                "table/index_bytes": start.memory["index_bytes"],
                "table/optimizer_bytes": start.memory["optimizer_bytes"],
                "table/full_bytes": start.memory["full_bytes"],
                "table/total_bytes": start.memory["total_bytes"],
                "table/compression": start.memory["compression"],
            },
            step=0,
        )
        if start.spec_text:
            self.client.log_text(self.run_id, start.spec_text, "tables.toml")
        if start.plan:
            self.client.log_text(self.run_id, start.plan, "sharding_plan.txt")

    def on_step(self, step: int, loss: float) -> None:
        self.pending_losses.append((step, loss))
        if len(self.pending_losses) >= LOSS_FLUSH_EVERY:
            self.flush_losses()

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.flush_losses()
        self.log_metrics(metrics, step)

    def on_checkpoint(self, path: str, epoch: int) -> None:
        self.client.set_tag(self.run_id, "recsys.checkpoint", path)

    def on_end(self, failed: bool) -> None:
        if self.run_id is None:
            return
        self.flush_losses()
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")

    def flush_losses(self) -> None:
        from mlflow.entities import Metric

        if self.run_id is None or not self.pending_losses:
            return
        now = int(time.time() * 1000)
        metrics = [Metric("train/loss", loss, now, step) for step, loss in self.pending_losses]
        self.client.log_batch(self.run_id, metrics=metrics)
        self.pending_losses.clear()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(name, float(value), now, step) for name, value in metrics.items()]
        )
