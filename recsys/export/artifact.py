"""Write an inference artifact (its format: `recsys.export.format`) from a trained serving model.

The directory is written under a temporary name unique to the run and put in place when complete;
an existing output is replaced only when it is an artifact itself, and never when it is, holds or
lies inside what the export reads (the checkpoint, the prepared data).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from recsys import __version__
from recsys.data.stats import RecordingStatistics
from recsys.export.format import MODEL_FILE, STATISTICS_FILE, is_artifact, write_manifest
from recsys.outputs import check_apart, put_in_place, remove, temporary_directory
from recsys.serving.quantize import PRECISIONS, storage_bytes
from recsys.tables import build_lookup
from recsys.tables.interface import lookup_of
from recsys.train.job import Job


def export_model(
    job: Job,
    serving: nn.Module,
    directory: Path,
    metrics: dict[str, float] | None = None,
    precision: str = "fp32",
    source: dict | None = None,
) -> Path:
    """Write the artifact of `serving` (the unsharded serving form of a model of `job`) to `directory`.

    With `precision` int8 or fp16 the tables are quantized first (in place) and the change in test
    AUC is measured and recorded; `source` says where the model came from (checkpoint, MLflow run).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    check_output(directory, [job.cache.path])
    raw_fields = job.cache.meta.get("raw_fields")
    if raw_fields is None:
        raise ValueError(f"{job.cache.path} was prepared before raw fields were recorded; prepare it again")
    lookup = lookup_of(serving)
    shape = lookup.serving_shape()
    recording = RecordingStatistics(job.cache.statistics())
    if shape is None:  # the lookup is rebuilt from the statistics it asks for; else from its shape alone
        build_lookup(job.spec, recording)
    quantization = None
    if precision != "fp32":
        from recsys.export.quantization import quantize_and_measure

        quantization = quantize_and_measure(job, serving, precision)
    report = lookup.memory_report()
    manifest = {
        "model": {
            "name": job.model,
            "overrides": job.model_overrides,
            "dense_features": len(job.cache.schema.dense_features),
        },
        "tables": job.spec.to_dict(),
        "table_shape": shape,
        "precision": precision,
        "quantization": quantization,
        "memory": {
            "table_bytes": storage_bytes(lookup),
            "index_bytes": report.index_bytes,
            "full_bytes": report.full_bytes,
        },
        "encoder": {
            "raw_fields": raw_fields,
            "dense_features": list(job.cache.schema.dense_features),
            "sparse_features": list(job.cache.schema.sparse_features),
        },
        "dataset": job.cache.schema.name,
        "format": job.cache.meta.get("format", "criteo"),
        "label": job.cache.schema.label,
        "metrics": metrics or {},
        "source": source or {},
        "versions": {"recsys": __version__, "torch": torch.__version__},
    }
    return write_artifact(directory, serving, recording, manifest)


def check_output(directory: Path, sources: list[Path]) -> None:
    """Refuse an output that would overwrite a source, or a directory that is not an artifact."""
    check_apart(directory, sources)
    if directory.exists() and not (directory.is_dir() and is_artifact(directory)):
        raise FileExistsError(
            f"-o {directory} exists and is not a recsys artifact (or holds other files too); it will not be "
            "replaced: choose another output"
        )


def write_artifact(directory: Path, serving: nn.Module, recording: RecordingStatistics, manifest: dict) -> Path:
    """model.pt, statistics.pt and the manifest (with its checksums), written beside and put in place."""
    index, arrays = recording.to_record()
    partial = temporary_directory(directory)
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in serving.state_dict().items()}
        torch.save(state, partial / MODEL_FILE)
        torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, partial / STATISTICS_FILE)
        write_manifest(partial, {**manifest, "statistics": index})
        put_in_place(partial, directory)
    finally:
        remove(partial)
    return directory


def job_of_checkpoint(checkpoint: Path) -> Job:
    """The job a checkpoint was written by, from what it records (data cache, tables, model, training)."""
    from recsys.data.cache import PreparedCache
    from recsys.tables import spec_from_mapping
    from recsys.train.checkpoint import read_progress
    from recsys.train.config import TrainConfig

    recorded = read_progress(checkpoint)["job"]
    model = dict(recorded["model"])
    name = model.pop("name")
    return Job(
        cache=PreparedCache.open(recorded["data"]["path"]),
        spec=spec_from_mapping(recorded["tables"], where=str(checkpoint)),
        model=name,
        config=TrainConfig(**{**recorded["train"], "progress": False}),
        model_overrides=model,
    )


def export_checkpoint(directory: Path, output: Path, precision: str = "fp32", source: dict | None = None) -> Path:
    """Export the checkpoint a run reports (`reported_checkpoint`: early stopping's best epoch, else the last)."""
    from recsys.train.best import load_weights
    from recsys.train.checkpoint import read_progress, reported_checkpoint
    from recsys.train.compaction import serving_model
    from recsys.train.distributed import ensure_process_group, shard_model
    from recsys.train.job import build

    checkpoint = reported_checkpoint(directory)
    job = job_of_checkpoint(checkpoint)
    check_output(output, [directory, checkpoint, job.cache.path])
    ensure_process_group()
    model, _ = build(job)
    sharded = shard_model(model, job.config.sparse_learning_rate, job.config.sparse_optimizer)
    load_weights(checkpoint, sharded)
    progress = read_progress(checkpoint)
    source = {**(source or {}), "checkpoint": str(checkpoint.resolve()), "epoch": progress.get("epoch")}
    metrics = progress.get("metrics", {})
    return export_model(job, serving_model(job, sharded), output, metrics, precision, source)
