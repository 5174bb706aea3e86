"""Per-epoch checkpoints with torch.distributed.checkpoint (sharded: each rank writes its own shards).

    <checkpoint_dir>/epoch-0001/   model and optimizer state (DCP files), progress.json, and
                                   checksums.json (the sha256 of every other file, written last)

One directory holds the checkpoints of one run: training into a directory that holds another run's
epochs is refused unless it resumes that run (`--resume`, same job) or replaces them (`--overwrite`).
A checkpoint is written under a temporary name unique to the run and renamed when complete, so
`--resume` never picks up half a checkpoint; afterwards only the best and the last epochs are kept
(`keep = "best,last"`, the default) or every epoch (`keep = "all"`). Resuming, restoring the best
epoch and exporting verify the checksums first and refuse a changed, truncated, missing or added
file by name.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torchrec.optim.keyed import CombinedOptimizer

from recsys.checksums import ChecksumError, checksums, verify
from recsys.config import flatten
from recsys.data.cache import PreparedCache
from recsys.errors import reason_of
from recsys.outputs import put_in_place
from recsys.tables import spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.distributed import is_main_process
from recsys.train.job import Job

PROGRESS_FILE = "progress.json"
CHECKSUM_FILE = "checksums.json"
EPOCH_NAME = re.compile(r"epoch-(\d{4})")
PARTIAL_NAME = re.compile(r"\.epoch-\d{4}\.[0-9a-f]{12}\.partial")
"""A checkpoint being written (`save_checkpoint`), or left by a run that was killed while writing it."""


def epoch_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}"


def save_checkpoint(directory: Path, model: nn.Module, optimizer: CombinedOptimizer, progress: dict, keep: str) -> Path:
    """Write epoch `progress["epoch"]` (every rank its shards), checksum it, rename it into place, apply `keep`."""
    target = epoch_path(directory, progress["epoch"])
    partial = directory / f".{target.name}.{save_token()}.partial"
    dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint_id=str(partial))
    if dist.is_initialized():
        dist.barrier()
    if is_main_process():
        (partial / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        listed = checksums(partial, [path.name for path in partial.iterdir()])
        (partial / CHECKSUM_FILE).write_text(json.dumps(listed, indent=2))
        put_in_place(partial, target)
        if keep != "all":
            kept = {progress["epoch"], (progress.get("early_stopping") or {}).get("best_epoch", 0)}
            remove_epochs(directory, lambda epoch: epoch not in kept)
    if dist.is_initialized():
        dist.barrier()
    return target


def save_token() -> str:
    """A name part unique to this save, the same on every rank (rank 0's, broadcast)."""
    token = [uuid.uuid4().hex[:12]]
    if dist.is_initialized():
        dist.broadcast_object_list(token, src=0)
    return token[0]


def epochs_in(directory: Path) -> dict[int, Path]:
    """The complete checkpoints of a directory by epoch."""
    if not directory.is_dir():
        return {}
    found = {}
    for path in directory.iterdir():
        match = EPOCH_NAME.fullmatch(path.name)
        if match and (path / PROGRESS_FILE).is_file():
            found[int(match.group(1))] = path
    return found


def remove_epochs(directory: Path, unwanted: Callable[[int], bool]) -> None:
    """Remove checkpoints: each is renamed to a temporary name first, so a kill mid-way leaves no half
    checkpoint under an epoch's name (a later claim of the directory removes the rest)."""
    for epoch, path in epochs_in(directory).items():
        if unwanted(epoch):
            aside = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.partial"
            path.rename(aside)
            shutil.rmtree(aside)


def claim_directory(directory: Path, resume: bool, overwrite: bool) -> None:
    """Make `directory` this run's: refuse another run's epochs unless resuming or overwriting them.

    With `overwrite` the other run's complete checkpoints (epoch-NNNN/ with progress.json) are
    removed, on the main process, before training starts, as are the half-written checkpoints of
    killed runs (.epoch-NNNN.<token>.partial/); nothing else in the directory is touched.
    """
    found = epochs_in(directory)  # every rank looks before any rank changes anything
    if dist.is_initialized():
        dist.barrier()
    if found and not resume and not overwrite:
        names = ", ".join(path.name for _, path in sorted(found.items())[:3])
        raise FileExistsError(
            f"--checkpoint-dir {directory} holds another run's checkpoints ({names}); pass --resume to continue "
            "that run, --overwrite to replace its checkpoints, or choose another directory"
        )
    if is_main_process() and directory.is_dir():
        for path in directory.iterdir():
            if PARTIAL_NAME.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
        if overwrite:
            remove_epochs(directory, lambda epoch: True)
    if dist.is_initialized():
        dist.barrier()


def latest_checkpoint(directory: Path) -> Path | None:
    found = epochs_in(directory)
    return found[max(found)] if found else None


def verify_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose files are not exactly those of its checksum list, unchanged."""
    listing = path / CHECKSUM_FILE
    if not listing.is_file():
        raise ChecksumError(f"{listing} is missing: the checkpoint is incomplete or was written by an older recsys")
    try:
        listed = json.loads(listing.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ChecksumError(f"{listing}: not valid JSON ({error})") from None
    if not isinstance(listed, dict):
        raise ChecksumError(f"{listing}: not a JSON object of file names and checksums")
    verify(path, listed, {CHECKSUM_FILE})


def read_progress(path: Path) -> dict:
    """What a checkpoint records besides tensors: epoch, step, metrics, early stopping, the job."""
    return json.loads((path / PROGRESS_FILE).read_text())


def reported_checkpoint(directory: Path) -> Path:
    """The checkpoint whose weights a run reports, verified: `directory` itself if it is one checkpoint,
    else the epoch early stopping chose (when the run had patience), else the last epoch."""
    if (directory / PROGRESS_FILE).exists():
        verify_checkpoint(directory)
        return directory
    latest = latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"{directory}: no complete checkpoint (epoch-NNNN/ with {PROGRESS_FILE})")
    verify_checkpoint(latest)
    progress = read_progress(latest)
    best_epoch = (progress.get("early_stopping") or {}).get("best_epoch", 0)
    if progress.get("patience") is None or best_epoch in (0, progress["epoch"]):
        return latest
    best = epoch_path(directory, best_epoch)
    if not (best / PROGRESS_FILE).is_file():
        raise FileNotFoundError(
            f"{directory}: early stopping chose epoch {best_epoch}, whose checkpoint {best.name} is gone; "
            f"export {latest} explicitly to take the last epoch instead"
        )
    verify_checkpoint(best)
    return best


def job_of_checkpoint(checkpoint: Path) -> Job:
    """The job a checkpoint was written by, from what it records (data cache, tables, model, training)."""
    recorded = read_progress(checkpoint)["job"]
    model = dict(recorded["model"])
    name = model.pop("name")
    cache = PreparedCache.open(recorded["data"]["path"])
    if cache.fingerprint != recorded["data"].get("fingerprint"):
        raise ValueError(
            f"{checkpoint}: its prepared data {cache.path} was prepared again since it was trained; its tables "
            "would not match the new vocabularies: train again on the new data"
        )
    return Job(
        cache=cache,
        spec=spec_from_mapping(recorded["tables"], where=str(checkpoint)),
        model=name,
        config=TrainConfig(**{**recorded["train"], "progress": False}),
        model_overrides=model,
    )


def load_checkpoint(path: Path, model: nn.Module, optimizer: CombinedOptimizer) -> None:
    """Load model and optimizer state in place (`resume` verified the checkpoint)."""
    optimizer.init_state()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    read_state(state, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def read_state(state: dict, path: Path) -> None:
    """Fill `state` (a state dict of the model the checkpoint's progress describes) from the checkpoint at `path`.

    Checksums prove the files are the ones written; a checkpoint whose tensors do not fit its own progress
    file (edited, or mixed from two runs) is an error naming it, not torch's traceback.
    """
    try:
        dcp.load(state, checkpoint_id=str(path))
    except CheckpointException as error:
        failures = [failure for failure, _ in error.failures.values()]
        reason = reason_of(failures[0]) if failures else "unreadable"
        raise ValueError(f"{path}: its tensors do not fit the model its {PROGRESS_FILE} describes ({reason})") from None


def resume(job: Job, model: nn.Module, optimizer: CombinedOptimizer, layouts: dict[str, str]) -> dict:
    """Load the latest complete checkpoint of `job` into model and optimizer; return its progress.

    Any world size and sharding will do, as long as every table keeps its optimizer state's layout.
    """
    directory = Path(job.config.checkpoint_dir)
    checkpoint = latest_checkpoint(directory)
    if checkpoint is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint in {directory}")
    verify_checkpoint(checkpoint)
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
