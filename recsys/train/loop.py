"""The training loop: build lookup and model, shard with DMP, train epochs, evaluate, checkpoint.

The loop reports through `events.Listener`s (progress, MLflow, tests) and never imports a tracker.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer
from tqdm import tqdm

from recsys.config import flatten
from recsys.data.cache import PreparedCache
from recsys.data.loader import BatchLoader
from recsys.models import build_model
from recsys.tables import build_lookup
from recsys.tables.interface import MemoryReport
from recsys.tables.spec import TableSpec
from recsys.train.checkpoint import latest_checkpoint, load_checkpoint, read_progress, save_checkpoint
from recsys.train.config import TrainConfig
from recsys.train.distributed import (
    compute_device,
    ensure_process_group,
    is_main_process,
    make_optimizer,
    shard_model,
)
from recsys.train.evaluation import evaluate
from recsys.train.events import Listener, RunStart


@dataclass
class TrainResult:
    metrics: dict[str, float]
    memory: MemoryReport
    model: nn.Module
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """What to train: data, table spec, model and its overrides, training settings."""

    cache: PreparedCache
    spec: TableSpec
    model: str
    config: TrainConfig
    model_overrides: dict = field(default_factory=dict)
    spec_text: str = ""

    def params(self) -> dict:
        return {
            "data": {"path": str(self.cache.path), "name": self.cache.name, **self.cache.meta["splits"]},
            "tables": self.spec.to_dict(),
            "model": {"name": self.model, **self.model_overrides},
            "train": self.config.to_dict(),
        }

    def resume_key(self) -> dict:
        """What a resumed run must share with the checkpoint's run to continue it exactly."""
        free = {"epochs", "resume", "checkpoint_dir", "progress", "log_every", "eval_batch_size"}
        params = self.params()
        params["train"] = {name: value for name, value in params["train"].items() if name not in free}
        return json.loads(json.dumps(params))  # as a checkpoint stores it: tuples become lists

    def tags(self) -> dict[str, str]:
        return {"strategy": self.spec.strategy, "model": self.model, "dataset": self.cache.name}


def build(job: Job) -> tuple[nn.Module, MemoryReport]:
    """The seeded, unsharded model of a job and its table memory."""
    torch.manual_seed(job.config.seed)
    lookup = build_lookup(job.spec, job.cache.statistics())
    model = build_model(job.model, lookup, len(job.cache.schema.dense_features), job.model_overrides)
    return model, lookup.memory_report()


def train(job: Job, listener: Listener = Listener()) -> TrainResult:
    ensure_process_group()
    config = job.config
    model, memory = build(job)
    sharded = shard_model(model, config.sparse_learning_rate)
    optimizer = make_optimizer(sharded, config.dense_optimizer, config.dense_learning_rate)
    progress = {"epoch": 0, "step": 0}
    if config.resume:
        progress = resume(job, sharded, optimizer)
    failed = True
    try:
        listener.on_start(RunStart(job.params(), job.tags(), memory.to_dict(), job.spec_text, plan=str(sharded.plan)))
        result = run_epochs(job, sharded, optimizer, progress, memory, listener)
        failed = False
        return result
    finally:
        listener.on_end(failed)


def resume(job: Job, model: nn.Module, optimizer: CombinedOptimizer) -> dict:
    directory = Path(job.config.checkpoint_dir)
    checkpoint = latest_checkpoint(directory)
    if checkpoint is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {directory}")
    progress = read_progress(checkpoint)
    expected = flatten(job.resume_key())
    found = flatten(progress["job"])
    differences = [
        f"{key}: checkpoint {found.get(key)!r}, now {expected.get(key)!r}"
        for key in sorted(set(expected) | set(found))
        if expected.get(key) != found.get(key)
    ]
    if differences:
        raise ValueError(f"--resume: {checkpoint} belongs to another run; " + "; ".join(differences))
    load_checkpoint(checkpoint, model, optimizer)
    return progress


def run_epochs(
    job: Job, model: nn.Module, optimizer: CombinedOptimizer, progress: dict, memory: MemoryReport, listener: Listener
) -> TrainResult:
    config = job.config
    train_loader = BatchLoader(job.cache, "train", config.batch_size, shuffle=True, seed=config.seed)
    losses: list[float] = []
    metrics: dict[str, float] = dict(progress.get("metrics", {}))
    step = progress["step"]
    for epoch in range(progress["epoch"], config.epochs):
        train_loader.set_epoch(epoch)
        step, samples_per_second = train_epoch(model, optimizer, train_loader, step, losses, listener, config, epoch)
        metrics = {"train/samples_per_s": samples_per_second, "epoch": epoch + 1}
        metrics.update(prefixed("val", evaluate(model, eval_loader(job, "val"), show_progress(config))))
        listener.on_metrics(metrics, step)
        if config.checkpoint_dir is not None:
            state = {"epoch": epoch + 1, "step": step, "metrics": metrics, "job": job.resume_key()}
            path = save_checkpoint(Path(config.checkpoint_dir), model, optimizer, state)
            listener.on_checkpoint(str(path), epoch + 1)
    test = prefixed("test", evaluate(model, eval_loader(job, "test"), show_progress(config)))
    listener.on_metrics(test, step)
    return TrainResult(metrics={**metrics, **test}, memory=memory, model=model, losses=losses)


def eval_loader(job: Job, split: str) -> BatchLoader:
    return BatchLoader(job.cache, split, job.config.eval_batch_size)


def show_progress(config: TrainConfig) -> bool:
    return config.progress and is_main_process()


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in values.items()}


def train_epoch(
    model: nn.Module,
    optimizer: CombinedOptimizer,
    loader: BatchLoader,
    step: int,
    losses: list[float],
    listener: Listener,
    config: TrainConfig,
    epoch: int,
) -> tuple[int, float]:
    """One pass over the training split; returns the global step and the training samples/s."""
    model.train()
    bar = tqdm(
        total=loader.rows, unit="samples", unit_scale=True, desc=f"epoch {epoch + 1}/{config.epochs}",
        disable=not show_progress(config), leave=False,
    )
    started = time.perf_counter()
    samples = 0
    device = compute_device()
    for batch in loader:
        batch = batch.to(device)
        optimizer.zero_grad()
        logits = model(batch.dense, batch.sparse)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        loss.backward()
        optimizer.step()
        step += 1
        samples += len(batch)
        bar.update(len(batch))
        if step % config.log_every == 0 or samples == loader.rows:
            value = loss.item()
            losses.append(value)
            listener.on_step(step, value)
            bar.set_postfix(loss=f"{value:.4f}")
    bar.close()
    return step, samples / max(time.perf_counter() - started, 1e-9)
