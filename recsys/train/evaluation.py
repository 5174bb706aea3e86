"""Evaluation over a whole split: predictions, then AUC and log loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recsys.data.loader import BatchLoader
from recsys.train.distributed import compute_device
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
        probabilities.append(torch.sigmoid(logits).cpu().numpy())
        labels.append(batch.labels.numpy())
        bar.update(len(batch))
    bar.close()
    model.train()
    if not probabilities:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.float32)
    return np.concatenate(probabilities), np.concatenate(labels)


def evaluate(model: nn.Module, loader: BatchLoader, progress: bool = False) -> dict[str, float]:
    probabilities, labels = predict(model, loader, progress)
    if len(labels) == 0:
        return {}
    return {"auc": roc_auc(probabilities, labels), "logloss": log_loss(probabilities, labels)}
