"""Click-prediction metrics: ROC AUC (ties count half) and log loss."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) statistic, tied scores averaged."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    average_rank = first_rank + (counts - 1) / 2.0
    rank_sum = average_rank[inverse][labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def log_loss(probabilities: np.ndarray, labels: np.ndarray, epsilon: float = 1e-7) -> float:
    """Mean binary cross-entropy of predicted click probabilities."""
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), epsilon, 1.0 - epsilon)
    labels = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(labels * np.log(probabilities) + (1.0 - labels) * np.log(1.0 - probabilities)))
