"""Per-epoch checkpoints with torch.distributed.checkpoint (sharded: each rank writes its own shards).

    <checkpoint_dir>/epoch-0001/   model and optimizer state (DCP files) + progress.json

A checkpoint is written as `epoch-NNNN.partial` and renamed when complete, so `--resume` never
picks up half a checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer

from recsys.train.distributed import is_main_process

PROGRESS_FILE = "progress.json"


def save_checkpoint(directory: Path, model: nn.Module, optimizer: CombinedOptimizer, progress: dict) -> Path:
    target = directory / f"epoch-{progress['epoch']:04d}"
    partial = target.with_name(target.name + ".partial")
    if is_main_process():
        shutil.rmtree(partial, ignore_errors=True)
    dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint_id=str(partial))
    if dist.is_initialized():
        dist.barrier()
    if is_main_process():
        (partial / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    if dist.is_initialized():
        dist.barrier()
    return target


def latest_checkpoint(directory: Path) -> Path | None:
    complete = sorted(path for path in directory.glob("epoch-[0-9][0-9][0-9][0-9]") if (path / PROGRESS_FILE).exists())
    return complete[-1] if complete else None


def read_progress(path: Path) -> dict:
    """What a checkpoint records besides tensors: epoch, step, metrics, table spec and model."""
    return json.loads((path / PROGRESS_FILE).read_text())


def load_checkpoint(path: Path, model: nn.Module, optimizer: CombinedOptimizer) -> None:
    """Load model and optimizer state in place."""
    optimizer.init_state()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
