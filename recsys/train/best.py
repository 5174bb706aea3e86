"""Early stopping on validation AUC, and the weights of the best epoch for the test.

After each epoch the validation AUC is compared with the best so far: an improvement keeps a copy
of the weights (in memory, every rank its own shards), `patience` epochs without one end training.
Test metrics are then computed with the best epoch's weights, as CTR libraries do, so a late worse
epoch never decides the result. A resumed run whose best epoch came before the restart reads that
epoch's weights back from its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from recsys.train.checkpoint import read_state

Snapshot = dict[str, list[torch.Tensor]]


def snapshot(model: nn.Module) -> Snapshot:
    """A copy of every tensor of the model's state (a sharded tensor: this rank's shards)."""
    return {
        key: [tensor.detach().clone() for tensor in local_tensors(value)] for key, value in model.state_dict().items()
    }


def restore(model: nn.Module, saved: Snapshot) -> None:
    """Copy a snapshot back into the model's state, in place (sharded tables included)."""
    with torch.no_grad():
        for key, value in model.state_dict().items():
            for tensor, copy in zip(local_tensors(value), saved[key]):
                tensor.copy_(copy)


def local_tensors(value: torch.Tensor) -> list[torch.Tensor]:
    if isinstance(value, ShardedTensor):
        return [shard.tensor for shard in value.local_shards()]
    return [value]


def load_weights(path: Path, model: nn.Module) -> None:
    """The model state of a checkpoint (not its optimizer state), loaded in place; the caller verified it."""
    state = {"model": model.state_dict()}
    read_state(state, path)
    model.load_state_dict(state["model"])


@dataclass
class EarlyStopping:
    """Tracks the best validation AUC; says when to stop; keeps the best weights."""

    patience: int | None
    best_auc: float = float("-inf")
    best_epoch: int = 0
    waited: int = 0
    weights: Snapshot | None = field(default=None, repr=False)

    def update(self, epoch: int, auc: float, model: nn.Module) -> bool:
        """Record epoch `epoch` (1-based); True when training should stop."""
        if auc > self.best_auc:
            self.best_auc, self.best_epoch, self.waited = auc, epoch, 0
            if self.patience is not None:
                self.weights = snapshot(model)
            return False
        self.waited += 1
        return self.patience is not None and self.waited >= self.patience

    def restore_best(self, model: nn.Module, last_epoch: int, checkpoint_dir: str | None) -> bool:
        """Put the best epoch's weights back if a later epoch trained; True if they were restored."""
        if self.patience is None or self.best_epoch in (0, last_epoch):
            return False
        if self.weights is not None:
            restore(model, self.weights)
            return True
        if checkpoint_dir is not None:
            path = Path(checkpoint_dir) / f"epoch-{self.best_epoch:04d}"
            if path.exists():
                from recsys.train.checkpoint import verify_checkpoint

                verify_checkpoint(path)
                load_weights(path, model)
                return True
        raise FileNotFoundError(
            f"the best epoch {self.best_epoch} came before this resumed run and its checkpoint is gone; "
            "its weights cannot be restored for the test"
        )

    def state(self) -> dict:
        return {"best_auc": self.best_auc, "best_epoch": self.best_epoch, "waited": self.waited}

    @classmethod
    def from_state(cls, patience: int | None, state: dict | None) -> EarlyStopping:
        return cls(patience, **(state or {}))
