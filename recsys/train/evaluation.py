"""Evaluation over a whole split: predictions, then AUC and log loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from recsys.data.loader import BatchLoader
from recsys.train.distributed import compute_device, rank_and_world_size
from recsys.train.metrics import log_loss, roc_auc


@torch.no_grad()
def predict(model: nn.Module, loader: BatchLoader, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(click probabilities, labels) over every row of the loader's split."""
    model.eval()
    probabilities, labels = [], []
    bar = tqdm(
        total=loader.rows,
        unit="samples",
        unit_scale=True,
        desc=f"evaluate {loader.split}",
        disable=not progress,
        leave=False,
    )
    device = compute_device()
    for batch in loader:
        logits = model(batch.dense.to(device), batch.sparse.to(device))
        real = batch.real_rows  # padding rows come last
        probabilities.append(torch.sigmoid(logits[:real]).cpu().numpy())
        labels.append(batch.labels[:real].numpy())
        bar.update(batch.global_rows or len(batch))
    bar.close()
    model.train()
    return gathered_in_order(probabilities), gathered_in_order(labels)


def gathered_in_order(parts: list[np.ndarray]) -> np.ndarray:
    """Every rank's per-batch arrays joined in global row order: batch by batch, rank by rank.

    Each rank holds consecutive slices of each global batch, so this restores the single-process order.
    """
    _, world_size = rank_and_world_size()
    if world_size > 1:
        everyone: list[list[np.ndarray] | None] = [None] * world_size
        dist.all_gather_object(everyone, parts)
        parts = [rank_parts[index] for index in range(len(parts)) for rank_parts in everyone]
    if not parts:
        return np.empty(0, dtype=np.float32)
    return np.concatenate(parts)


def evaluate(model: nn.Module, loader: BatchLoader, progress: bool = False) -> dict[str, float]:
    probabilities, labels = predict(model, loader, progress)
    if len(labels) == 0:
        return {}
    return {"auc": roc_auc(probabilities, labels), "logloss": log_loss(probabilities, labels)}
