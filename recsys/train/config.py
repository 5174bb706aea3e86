"""Training settings, with the defaults `recsys train` uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

PLATEAU_FACTOR = 0.1
"""The default learning-rate factor on a plateau under early stopping (FuxiCTR's reduce-on-plateau)."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    patience: int | None = None
    """Stop after this many epochs without a better validation AUC, and test the best epoch's weights;
    None: train every epoch and test the last."""
    lr_decay: float | None = None
    """After an epoch without a better validation AUC, multiply every learning rate by this (reduce on
    plateau); 1: keep them. None: FuxiCTR's 0.1 under `patience`, else 1 (see `plateau_factor`)."""
    batch_size: int = 4096
    eval_batch_size: int = 16384
    dense_optimizer: Literal["adam", "adagrad"] = "adam"
    dense_learning_rate: float = 1e-3
    sparse_optimizer: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    """adam: only for data-parallel tables (fbgemm has no fused Adam on CPU), which train on dense gradients."""
    sparse_learning_rate: float = 0.05
    sparse_weight_decay: float = 0.0
    """L2 weight decay of the tables (every row, every step: torch's optimizers on dense gradients); only for
    data-parallel tables: fbgemm's CPU kernels ignore weight decay (see the README)."""
    clip_norm: float | None = None
    """Scale the gradients the torch optimizers step on (dense layers, data-parallel tables) down to this
    total L2 norm when larger; None: no clipping. Fused tables update inside backward and are not clipped."""
    seed: int = 0
    checkpoint_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    """Replace the checkpoints another run left in `checkpoint_dir` (else such a directory is refused)."""
    keep: Literal["best,last", "all"] = "best,last"
    """Which epochs' checkpoints stay: the best (validation AUC) and the last, or every one."""
    log_every: int = 20
    progress: bool = True
    sharding: Literal["auto", "table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"] = "auto"
    rank_memory: int | None = None
    """Bytes of tables and optimizer state one rank may hold (the planner's budget); None: no limit."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dense_learning_rate", "sparse_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.sparse_weight_decay >= 0:
            raise ValueError(f"sparse_weight_decay must be 0 or more, got {self.sparse_weight_decay}")
        dense_only = [name for name in ("adam", "weight decay") if name == self.sparse_optimizer or (
            name == "weight decay" and self.sparse_weight_decay)]  # fmt: skip
        if dense_only and self.sharding != "data_parallel":
            raise ValueError(
                f"table {dense_only[0]} needs data-parallel tables (sharding = 'data_parallel'): fbgemm's fused CPU "
                "kernels have no Adam and ignore weight decay"
            )
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1] (1: constant rates), got {self.lr_decay}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive, got {self.clip_norm}")
        if self.patience is not None and self.patience <= 0:
            raise ValueError(f"patience must be positive, got {self.patience}")
        if self.rank_memory is not None and self.rank_memory <= 0:
            raise ValueError(f"rank_memory must be positive, got {self.rank_memory}")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint directory (--checkpoint-dir)")
        if self.resume and self.overwrite:
            raise ValueError(
                "resume continues the run in the checkpoint directory and overwrite replaces it: choose one"
            )

    @property
    def plateau_factor(self) -> float:
        """The learning-rate factor after an epoch without a better validation AUC: `lr_decay` if given,
        else 0.1 when early stopping is on (FuxiCTR's reduce-on-plateau), else 1 (constant rates)."""
        if self.lr_decay is not None:
            return self.lr_decay
        return PLATEAU_FACTOR if self.patience is not None else 1.0

    def to_dict(self) -> dict:
        """The settings, with the plateau factor the run uses in place of an unset `lr_decay`."""
        return {**asdict(self), "lr_decay": self.plateau_factor}
