"""Write an inference artifact: weights-only files, a manifest, and a checksum of every file.

    <dir>/manifest.json    model, table spec and serving shape, precision (and what quantizing cost),
                           raw fields (the row encoder), recorded statistics index, memory, metrics,
                           versions, sha256 of every other file
    <dir>/model.pt         the serving model's state (tensors only: loads with weights_only=True)
    <dir>/statistics.pt    the statistics the lookup's constructor asked for (`RecordingStatistics`)

Nothing in it executes code when loaded. The directory is written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from recsys import __version__
from recsys.data.stats import RecordingStatistics
from recsys.serving.artifact import FORMAT_VERSION, MANIFEST, sha256
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
        "format_version": FORMAT_VERSION,
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


def write_artifact(directory: Path, serving: nn.Module, recording: RecordingStatistics, manifest: dict) -> Path:
    """model.pt, statistics.pt and the manifest (with their checksums), written beside and renamed."""
    index, arrays = recording.to_record()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in serving.state_dict().items()}
        torch.save(state, partial / "model.pt")
        torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, partial / "statistics.pt")
        manifest = {**manifest, "statistics": index}
        manifest["files"] = {name: sha256(partial / name) for name in ("model.pt", "statistics.pt")}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, default=list))
        if directory.exists():
            shutil.rmtree(directory)
        partial.rename(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
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


def checkpoint_to_export(directory: Path) -> Path:
    """`directory` itself if it is one checkpoint; else its best epoch's (early stopping) or latest one."""
    from recsys.train.checkpoint import PROGRESS_FILE, latest_checkpoint, read_progress

    if (directory / PROGRESS_FILE).exists():
        return directory
    latest = latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"{directory}: no complete checkpoint (epoch-NNNN/ with {PROGRESS_FILE})")
    progress = read_progress(latest)
    best_epoch = (progress.get("early_stopping") or {}).get("best_epoch", 0)
    best = directory / f"epoch-{best_epoch:04d}"
    if progress["job"]["train"].get("patience") is not None and best_epoch and (best / PROGRESS_FILE).exists():
        return best
    return latest


def export_checkpoint(directory: Path, output: Path, precision: str = "fp32", source: dict | None = None) -> Path:
    """Export a checkpoint (see `checkpoint_to_export`) to `output`."""
    from recsys.train.best import load_weights
    from recsys.train.checkpoint import read_progress
    from recsys.train.compaction import serving_model
    from recsys.train.distributed import ensure_process_group, shard_model
    from recsys.train.job import build

    checkpoint = checkpoint_to_export(directory)
    job = job_of_checkpoint(checkpoint)
    ensure_process_group()
    model, _ = build(job)
    sharded = shard_model(model, job.config.sparse_learning_rate, job.config.sparse_optimizer)
    load_weights(checkpoint, sharded)
    progress = read_progress(checkpoint)
    source = {**(source or {}), "checkpoint": str(checkpoint.resolve()), "epoch": progress.get("epoch")}
    metrics = progress.get("metrics", {})
    return export_model(job, serving_model(job, sharded), output, metrics, precision, source)
