"""Export from an MLflow run, and log an artifact back to MLflow as a pyfunc model.

A training run tracked in MLflow records its latest checkpoint in the tag `recsys.checkpoint`;
`recsys export <run id>` exports from that checkpoint directory (its best epoch when early stopping
chose one) and logs the artifact into the same run as a pyfunc model (`recsys.serving.mlflow_pyfunc`),
with the export's quantization figures as metrics.
"""

from __future__ import annotations

import re
from pathlib import Path

from recsys import __version__
from recsys.tracking import CHECK_ENVIRONMENT, RUN_TOKEN_TAG, TrackingUnavailable, environment

CHECKPOINT_TAG = "recsys.checkpoint"
EXPORTED_TAG = "recsys.exported"
"""`recsys.exported.<model name>`: the URI of a pyfunc model logged by an export of the run."""
RUN_ID = re.compile(r"[0-9a-f]{32}")


def looks_like_run_id(source: str) -> bool:
    return bool(RUN_ID.fullmatch(source))


def checkpoint_of_run(run_id: str, tracking_uri: str) -> tuple[Path, str | None]:
    """The checkpoint directory of a training run (from its `recsys.checkpoint` tag) and the run's token,
    which its own checkpoints carry (None for a run tracked before tokens)."""
    from mlflow.tracking import MlflowClient

    try:
        with environment(CHECK_ENVIRONMENT):
            run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception as error:  # MLflow raises its own error kinds for an unknown run
        raise TrackingUnavailable(f"no MLflow run {run_id} in {tracking_uri}: {str(error)[:200]}") from error
    tagged = run.data.tags.get(CHECKPOINT_TAG)
    if tagged is None:
        raise FileNotFoundError(
            f"MLflow run {run_id} recorded no checkpoint; train with --checkpoint-dir to make a run exportable"
        )
    directory = Path(tagged).parent  # the tag names the latest epoch; its directory holds the run's best too
    if not directory.is_dir():
        raise FileNotFoundError(f"MLflow run {run_id}: its checkpoint directory {directory} is gone (moved or deleted)")
    return directory, run.data.tags.get(RUN_TOKEN_TAG)


def requirements() -> list[str]:
    """What the pyfunc model needs installed (torchrec itself goes in with --no-deps, see the README)."""
    import fbgemm_gpu
    import torch
    import torchrec

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"fbgemm-gpu-cpu=={fbgemm_gpu.__version__.split('+')[0]}",
        f"torchrec=={torchrec.__version__.split('+')[0]}",
        f"recsys=={__version__}",
    ]


def log_pyfunc(directory: Path, run_id: str, tracking_uri: str, name: str) -> str:
    """Log the artifact in `directory` to run `run_id` as pyfunc model `name`; its model URI."""
    import json

    import mlflow

    from recsys.export.format import MANIFEST

    manifest = json.loads((directory / MANIFEST).read_text())
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    finished = client.get_run(run_id).info  # reopening the run to log into it must not change how it ended
    try:
        with environment({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}), mlflow.start_run(run_id=run_id):
            uri = log_into_active_run(directory, manifest, name)
    finally:
        if finished.end_time is None:  # a run still training
            client.update_run(run_id, status=finished.status)
        else:
            client.set_terminated(run_id, status=finished.status, end_time=finished.end_time)
    return uri


def log_into_active_run(directory: Path, manifest: dict, name: str) -> str:
    """Log the pyfunc model, the export's metrics and the model's URI tag into the active run."""
    import mlflow

    from recsys.serving import mlflow_pyfunc

    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=mlflow_pyfunc.__file__,
        artifacts={mlflow_pyfunc.ARTIFACT_KEY: str(directory)},
        pip_requirements=requirements(),
        metadata={"recsys_precision": manifest["precision"]},
    )
    mlflow.log_metrics(export_metrics(manifest))
    mlflow.set_tag(f"{EXPORTED_TAG}.{name}", info.model_uri)
    return info.model_uri


def export_metrics(manifest: dict) -> dict[str, float]:
    """The export's figures as MLflow metrics: table bytes, and what quantizing cost on the test split."""
    precision = manifest["precision"]
    metrics = {f"export/{precision}/table_bytes": float(manifest["memory"]["table_bytes"])}
    quantization = manifest.get("quantization") or {}
    for key in ("auc_change", "logloss_change"):
        if key in quantization:
            metrics[f"export/{precision}/test_{key}"] = float(quantization[key])
    return metrics
