"""The training loop: build lookup and model, shard with DMP, train epochs, evaluate, checkpoint.

The loop reports through `events.Listener`s (progress, MLflow, tests) and never imports a tracker.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_
from torchrec.optim.keyed import CombinedOptimizer
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm import tqdm

from recsys.data.loader import Batch, BatchLoader
from recsys.tables.interface import MemoryReport, lookup_of
from recsys.train.best import EarlyStopping
from recsys.train.checkpoint import claim_directory, resume, save_checkpoint
from recsys.train.compaction import serving_model
from recsys.train.config import TrainConfig
from recsys.train.distributed import (
    compute_device,
    ensure_process_group,
    is_main_process,
    make_optimizer,
    mean_over_ranks,
    rank_and_world_size,
    shard_model,
)
from recsys.train.evaluation import evaluate
from recsys.train.events import Listener, RunStart
from recsys.train.job import Job, build
from recsys.train.sharding import ShardingRequest, describe_plan, rank_bytes, state_layouts, table_shapes


@dataclass
class TrainResult:
    metrics: dict[str, float]
    memory: MemoryReport
    model: nn.Module
    losses: list[float] = field(default_factory=list)
    serving: nn.Module | None = None
    """The unsharded compact serving form, for strategies whose serving form differs (`compacts`)."""

    @property
    def shipped_memory(self) -> MemoryReport:
        """The size of what export ships: the compact serving form where the strategy builds one, else the tables."""
        return lookup_of(self.serving).memory_report() if self.serving is not None else self.memory

    @property
    def shipped_metrics(self) -> dict[str, float]:
        """The metrics with the test metrics of what export ships (the compact form's, where there is one)."""
        compact = {name.removeprefix("compact/"): value for name, value in self.metrics.items()}
        return {**self.metrics, **{name: value for name, value in compact.items() if name.startswith("test/")}}


def train(job: Job, listener: Listener | None = None) -> TrainResult:
    """Train `job` to the end (or from its latest checkpoint with `resume`), reporting to `listener`."""
    listener = listener or Listener()
    ensure_process_group()
    model, memory = build(job)
    config = job.config
    _, world_size = rank_and_world_size()
    request = ShardingRequest(
        config.sharding,
        dict(job.spec.sharding),
        config.rank_memory,
        config.sparse_optimizer,
        batch_size=-(-config.batch_size // world_size),
    )
    shapes = table_shapes(model)
    sharded = shard_model(model, config.sparse_learning_rate, config.sparse_optimizer, request)
    optimizer = make_optimizer(
        sharded,
        config.dense_optimizer,
        config.dense_learning_rate,
        config.sparse_optimizer,
        config.sparse_learning_rate,
        config.sparse_weight_decay,
    )
    layouts = state_layouts(sharded.plan)
    if config.checkpoint_dir is not None:
        claim_directory(Path(config.checkpoint_dir), config.resume, config.overwrite)
    progress = resume(job, sharded, optimizer, layouts) if job.config.resume else {"epoch": 0, "step": 0}
    run_token = progress.get("run") or uuid.uuid4().hex
    failed = True
    try:
        plan = describe_plan(sharded.plan, shapes, world_size, config.sparse_optimizer)
        start = RunStart(
            job.params(),
            job.tags(),
            memory.to_dict(),
            job.spec_text,
            plan=plan,
            data_path=str(job.cache.path),
            run_token=run_token,
        )
        listener.on_start(start)
        per_rank = rank_bytes(sharded.plan, shapes, world_size, config.sparse_optimizer)
        listener.on_metrics({f"sharding/rank_{rank}_bytes": total for rank, total in enumerate(per_rank)}, 0)
        trainer = Trainer(
            job,
            sharded,
            optimizer,
            listener,
            step=progress["step"],
            total_steps=progress.get("total_steps"),
            layouts=layouts,
            stopping=EarlyStopping.from_state(config.patience, progress.get("early_stopping")),
            learning_rate_factor=progress.get("learning_rate_factor", 1.0),
            run_token=run_token,
        )
        metrics = trainer.run(first_epoch=progress["epoch"], metrics=dict(progress.get("metrics", {})))
        serving = trainer.compact() if lookup_of(sharded).compacts else None
        if serving is not None:  # the lookup's final form may differ from its planned one (a searched architecture)
            metrics.update(serving[1])
            memory = lookup_of(sharded).memory_report()
        failed = False
        return TrainResult(
            metrics=metrics,
            memory=memory,
            model=sharded,
            losses=trainer.losses,
            serving=serving[0] if serving else None,
        )
    finally:
        listener.on_end(failed)


def batch_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Log loss of one rank's rows, scaled so that averaging over ranks gives the global batch's mean.

    Gradients of dense layers (DDP) and of tables (torchrec) are averaged over ranks, so a rank
    contributes sum(its losses) * world_size / global_rows; padding rows weigh 0.
    """
    if batch.weights is None:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
    _, world_size = rank_and_world_size()
    return (losses * batch.weights).sum() * (world_size / batch.global_rows)


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{name}": value for name, value in values.items()}


@dataclass
class Trainer:
    """The epochs of one run: train, evaluate on validation, checkpoint; then test."""

    job: Job
    model: nn.Module
    optimizer: CombinedOptimizer
    listener: Listener
    step: int = 0
    total_steps: int | None = None
    layouts: dict[str, str] = field(default_factory=dict)
    """Steps of the whole run, the basis of `progress` for lookups; a resumed run keeps its first value,
    so a pruning schedule is not stretched when `epochs` grows."""
    losses: list[float] = field(default_factory=list)

    stopping: EarlyStopping | None = None
    learning_rate_factor: float = 1.0
    run_token: str = ""

    def __post_init__(self) -> None:
        self.lookup = lookup_of(self.model)
        self.clipped = [parameter for _, parameter in in_backward_optimizer_filter(self.model.named_parameters())]
        """What the torch optimizers step on (dense layers, data-parallel tables): what `clip_norm` clips."""
        if self.stopping is None:
            self.stopping = EarlyStopping(self.config.patience)
        for group in self.optimizer.param_groups:  # a resumed run continues with its decayed rates
            group["lr"] *= self.learning_rate_factor
        if self.total_steps is None:
            self.total_steps = self.config.epochs * len(BatchLoader(self.job.cache, "train", self.config.batch_size))

    @property
    def config(self) -> TrainConfig:
        return self.job.config

    def loader(self, split: str, batch_size: int, shuffle: bool = False) -> BatchLoader:
        """This rank's part of every global batch of `split`."""
        rank, world_size = rank_and_world_size()
        return BatchLoader(
            self.job.cache, split, batch_size, shuffle=shuffle, seed=self.config.seed, rank=rank, world_size=world_size
        )

    @property
    def show_progress(self) -> bool:
        return self.config.progress and is_main_process()

    def run(self, first_epoch: int, metrics: dict[str, float]) -> dict[str, float]:
        loader = self.loader("train", self.config.batch_size, shuffle=True)
        last_epoch = first_epoch
        for epoch in range(first_epoch, self.config.epochs):
            if self.stopping.patience is not None and self.stopping.waited >= self.stopping.patience:
                break  # a resumed run that had already stopped
            loader.set_epoch(epoch)
            metrics = {"train/samples_per_s": self.train_epoch(loader, epoch), "epoch": epoch + 1}
            metrics.update(self.evaluate("val"))
            last_epoch = epoch + 1
            metrics.update(self.search(epoch))
            settled = self.lookup.settled(self.step / max(self.total_steps, 1))
            stop = settled and self.stopping.update(last_epoch, metrics["val/auc"], self.model)
            if settled and self.stopping.waited and not stop:
                metrics.update(self.decay_learning_rates())
            metrics["best_epoch"] = self.stopping.best_epoch
            self.listener.on_metrics(metrics, self.step)
            if self.config.checkpoint_dir is not None:
                self.checkpoint(last_epoch, metrics)
            if stop:
                break
        if self.stopping.restore_best(self.model, last_epoch, self.config.checkpoint_dir):
            metrics = {**metrics, **self.best_metrics(metrics)}
        test = self.evaluate("test") or {"test/rows": 0.0}  # no test rows: said, not silently left out
        self.listener.on_metrics(test, self.step)
        return {**metrics, **test}

    def search(self, epoch: int) -> dict[str, float]:
        """Let the lookup search its architecture by validation AUC (a bar counts the candidates scored
        and shows the best so far); after a search, validate what it chose."""
        bar = tqdm(desc="architecture search", unit="candidates", disable=not self.show_progress, leave=False, delay=1)
        best = 0.0

        def validation_auc() -> float:
            nonlocal best
            auc = self.evaluate("val")["val/auc"]
            best = max(best, auc)
            bar.update(1)
            bar.set_postfix(best_val_auc=f"{best:.4f}")
            return auc

        found = self.lookup.after_epoch(self.step / max(self.total_steps, 1), validation_auc)
        bar.close()
        return {**found, **self.evaluate("val")} if found else {}

    def decay_learning_rates(self) -> dict[str, float]:
        """Multiply every learning rate (tables' fused optimizer included) by the plateau factor."""
        factor = self.config.plateau_factor
        if factor == 1.0:
            return {}
        for group in self.optimizer.param_groups:
            group["lr"] *= factor
        self.learning_rate_factor *= factor
        return {"learning_rate_factor": self.learning_rate_factor}

    def best_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Validation metrics of the restored best epoch (recomputed: they are what the test uses)."""
        best = {"stopped_epoch": metrics.get("epoch", 0), **self.evaluate("val")}
        self.listener.on_metrics(best, self.step)
        return best

    def train_epoch(self, loader: BatchLoader, epoch: int) -> float:
        """One pass over the training split; returns the training samples/s."""
        self.model.train()
        bar = tqdm(
            total=loader.rows,
            unit="samples",
            unit_scale=True,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.show_progress,
            leave=False,
        )
        device = compute_device()
        started = time.perf_counter()
        samples = 0
        for batch in loader:
            loss = self.train_step(batch.to(device))
            self.after_step()
            rows = batch.global_rows or len(batch)
            samples += rows
            bar.update(rows)
            if self.step % self.config.log_every == 0 or samples == loader.rows:
                value = mean_over_ranks(loss.detach())
                self.losses.append(value)
                self.listener.on_step(self.step, value)
                bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        return samples / max(time.perf_counter() - started, 1e-9)

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimizer step; returns this rank's loss (its mean over ranks is the global batch's mean)."""
        self.optimizer.zero_grad()
        logits = self.model(batch.dense, batch.sparse)
        loss = batch_loss(logits, batch)
        loss.backward()  # the fused optimizer updates the tables here
        if self.config.clip_norm is not None:
            clip_grad_norm_(self.clipped, self.config.clip_norm)
        self.optimizer.step()
        self.step += 1
        return loss

    def after_step(self) -> None:
        """Let the lookup act on training progress (pruning schedules); log what it reports."""
        metrics = self.lookup.after_step(self.step / max(self.total_steps, 1))
        if metrics:
            self.listener.on_metrics(metrics, self.step)

    def evaluate(self, split: str, model: nn.Module | None = None) -> dict[str, float]:
        loader = self.loader(split, self.config.eval_batch_size)
        return prefixed(split, evaluate(model or self.model, loader, self.show_progress))

    def compact(self) -> tuple[nn.Module, dict[str, float]]:
        """The compact serving form, its test metrics (which should equal the trained model's) and bytes."""
        serving = serving_model(self.job, self.model)
        metrics = prefixed("compact", self.evaluate("test", serving))
        metrics.update(prefixed("compact/table", lookup_of(serving).memory_report().to_dict()))
        self.listener.on_metrics(metrics, self.step)
        return serving, metrics

    def checkpoint(self, epoch: int, metrics: dict[str, float]) -> None:
        progress = {
            "epoch": epoch,
            "step": self.step,
            "total_steps": self.total_steps,
            "layouts": self.layouts,
            "metrics": metrics,
            "early_stopping": self.stopping.state(),
            "patience": self.config.patience,
            "run": self.run_token,
            "learning_rate_factor": self.learning_rate_factor,
            "job": self.job.resume_key(),
        }
        path = save_checkpoint(Path(self.config.checkpoint_dir), self.model, self.optimizer, progress, self.config.keep)
        self.listener.on_checkpoint(str(path), epoch)
