"""Write an inference artifact: weights-only files, a manifest, and a checksum of every file.

    <dir>/manifest.json    model, table spec, raw fields (the row encoder), recorded statistics index,
                           metrics, versions, sha256 of every other file
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
from recsys.tables import build_lookup
from recsys.train.job import Job


def export_model(job: Job, serving: nn.Module, directory: Path, metrics: dict[str, float] | None = None) -> Path:
    """Write the artifact of `serving` (the unsharded serving form of a model of `job`) to `directory`."""
    if job.spec.strategy == "pruned":
        raise ValueError("exporting pruned tables (their compact form) is not built yet; export another strategy")
    raw_fields = job.cache.meta.get("raw_fields")
    if raw_fields is None:
        raise ValueError(f"{job.cache.path} was prepared before raw fields were recorded; prepare it again")
    recording = RecordingStatistics(job.cache.statistics())
    build_lookup(job.spec, recording)
    index, arrays = recording.to_record()
    schema = job.cache.schema
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in serving.state_dict().items()}
        torch.save(state, partial / "model.pt")
        torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, partial / "statistics.pt")
        manifest = {
            "format_version": FORMAT_VERSION,
            "model": {
                "name": job.model,
                "overrides": job.model_overrides,
                "dense_features": len(schema.dense_features),
            },
            "tables": job.spec.to_dict(),
            "encoder": {
                "raw_fields": raw_fields,
                "dense_features": list(schema.dense_features),
                "sparse_features": list(schema.sparse_features),
            },
            "statistics": index,
            "dataset": schema.name,
            "metrics": metrics or {},
            "versions": {"recsys": __version__, "torch": torch.__version__},
            "files": {name: sha256(partial / name) for name in ("model.pt", "statistics.pt")},
        }
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


def export_checkpoint(directory: Path, output: Path) -> Path:
    """Export the latest complete checkpoint in `directory` (or that checkpoint itself) to `output`."""
    from recsys.train.best import load_weights
    from recsys.train.checkpoint import PROGRESS_FILE, latest_checkpoint, read_progress
    from recsys.train.compaction import serving_model
    from recsys.train.distributed import ensure_process_group, shard_model
    from recsys.train.job import build

    checkpoint = directory if (directory / PROGRESS_FILE).exists() else latest_checkpoint(directory)
    if checkpoint is None:
        raise FileNotFoundError(f"{directory}: no complete checkpoint (epoch-NNNN/ with {PROGRESS_FILE})")
    job = job_of_checkpoint(checkpoint)
    ensure_process_group()
    model, _ = build(job)
    sharded = shard_model(model, job.config.sparse_learning_rate, job.config.sparse_optimizer)
    load_weights(checkpoint, sharded)
    metrics = read_progress(checkpoint).get("metrics", {})
    return export_model(job, serving_model(job, sharded), output, metrics)
