"""The model a run hands over when it is done: unsharded, in its serving form, with what rebuilds it.

Training owns everything that knows how a model was trained (its job, its sharding, its
checkpoints); export (`recsys.export.artifact`) receives a `FinishedModel` and only writes it:

    trained (DMP) model ──gather, compact──▶ serving model ─┐
    job's statistics ──what the lookup asks for──▶ record ──┼──▶ FinishedModel ──export──▶ artifact
    job ──model, tables, raw fields, dataset──▶ description ┘

A checkpoint becomes a `FinishedModel` without sharding anything: its weights are read with
torch.distributed.checkpoint straight into an unsharded model of its job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from recsys.data.loader import BatchLoader
from recsys.data.stats import RecordingStatistics
from recsys.tables import build_lookup
from recsys.tables.interface import lookup_of
from recsys.train.checkpoint import job_of_checkpoint, read_progress, read_state, reported_checkpoint
from recsys.train.compaction import compacted, serving_model
from recsys.train.evaluation import evaluate
from recsys.train.job import Job, build

EVALUATION_BATCH_ROWS = 8192


@dataclass
class FinishedModel:
    """A trained model in its serving form and everything an artifact records about it."""

    model: nn.Module
    """Unsharded, its lookup in serving form (pruned tables compacted), in eval mode."""
    statistics: RecordingStatistics
    """Only what the lookup's constructor asked for (none where the serving form is rebuilt from its shape)."""
    description: dict
    """model, tables, raw-row encoder, dataset, format and label (keys of the artifact's manifest)."""
    test_metrics: Callable[[nn.Module], dict[str, float]]
    """AUC and log loss of a model on the run's test split (empty when it has no rows)."""
    metrics: dict[str, float] = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    """What the model was made from (the prepared data, the checkpoint): an export must not overwrite these."""


def finished_model(
    job: Job,
    trained: nn.Module,
    metrics: dict[str, float] | None = None,
    source: dict | None = None,
    recording: RecordingStatistics | None = None,
    owned: bool = False,
) -> FinishedModel:
    """The finished form of `trained` (a model of `job`, sharded or not); `recording`, when given, holds
    what the lookup of `trained` asked for as it was built (else it is asked again). An `owned` model is
    unsharded and handed over: it is compacted in place instead of copied into a new one."""
    raw_fields = job.cache.meta.get("raw_fields")
    if raw_fields is None:
        raise ValueError(f"{job.cache.path} was prepared before raw fields were recorded; prepare it again")
    serving = compacted(trained) if owned else serving_model(job, trained)
    if lookup_of(serving).serving_shape() is not None:  # rebuilt from its shape alone: no statistics needed
        recording = RecordingStatistics(job.cache.statistics())
    elif recording is None:
        recording = RecordingStatistics(job.cache.statistics())
        build_lookup(job.spec, recording)
    schema = job.cache.schema
    description = {
        "model": {"name": job.model, "overrides": job.model_overrides, "dense_features": len(schema.dense_features)},
        "tables": job.spec.to_dict(),
        "encoder": {
            "raw_fields": raw_fields,
            "dense_features": list(schema.dense_features),
            "sparse_features": list(schema.sparse_features),
        },
        "dataset": schema.name,
        "format": job.cache.meta.get("format", "criteo"),
        "label": schema.label,
    }
    return FinishedModel(
        model=serving,
        statistics=recording,
        description=description,
        test_metrics=lambda model: metrics_on_test(job, model),
        metrics=dict(metrics or {}),
        source=dict(source or {}),
        inputs=[job.cache.path],
    )


def metrics_on_test(job: Job, model: nn.Module) -> dict[str, float]:
    loader = BatchLoader(job.cache, "test", EVALUATION_BATCH_ROWS)
    if loader.rows == 0:
        return {}
    return evaluate(model, loader)


def finished_model_of_checkpoint(
    directory: Path, source: dict | None = None, run_token: str | None = None
) -> FinishedModel:
    """The finished model of the checkpoint a run reports (early stopping's best epoch, else the last);
    with `run_token`, the checkpoint must have been written by that training."""
    checkpoint = reported_checkpoint(directory)
    progress = read_progress(checkpoint)
    if run_token and progress.get("run") != run_token:
        raise ValueError(
            f"{checkpoint} was written by another training than the run's (its directory was used again, "
            "e.g. with --overwrite); export that checkpoint directory itself, or train the run again"
        )
    job = job_of_checkpoint(checkpoint)
    recording = RecordingStatistics(job.cache.statistics())
    model, _ = build(job, recording)
    state = {"model": model.state_dict()}
    read_state(state, checkpoint)
    model.load_state_dict(state["model"])
    origin = {**(source or {}), "checkpoint": str(checkpoint.resolve()), "epoch": progress.get("epoch")}
    finished = finished_model(job, model, progress.get("metrics", {}), origin, recording, owned=True)
    finished.inputs += [directory, checkpoint]
    return finished
