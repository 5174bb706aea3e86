"""Per-epoch checkpoints with torch.distributed.checkpoint (sharded: each rank writes its own shards).

    <checkpoint_dir>/epoch-0001/   model and optimizer state (DCP files) + progress.json

A checkpoint is written as `epoch-NNNN.partial` and renamed when complete, so `--resume` never
picks up half a checkpoint. `resume` loads the latest one into a run after checking that it belongs
to the same job and keeps every table's optimizer-state layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer

from recsys.config import flatten
from recsys.train.distributed import is_main_process
from recsys.train.job import Job

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


def resume(job: Job, model: nn.Module, optimizer: CombinedOptimizer, layouts: dict[str, str]) -> dict:
    """Load the latest complete checkpoint of `job` into model and optimizer; return its progress.

    Any world size and sharding will do, as long as every table keeps its optimizer state's layout.
    """
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
    saved = progress.get("layouts", layouts)
    moved = [
        f"{table} was {saved.get(table)}, now {layout}"
        for table, layout in layouts.items()
        if saved.get(table) != layout
    ]
    if moved:
        raise ValueError(
            f"--resume: {checkpoint} holds optimizer state in another layout ({'; '.join(moved[:3])}): table-wise, "
            "row-wise and table-row-wise convert freely between any number of processes, column-wise and "
            "data-parallel only into themselves; resume with the checkpoint's --sharding"
        )
    load_checkpoint(checkpoint, model, optimizer)
    return progress
