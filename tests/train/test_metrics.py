"""AUC and log loss against brute-force definitions."""

from __future__ import annotations

import math

import numpy as np

from recsys.train.metrics import log_loss, roc_auc


def pairwise_auc(scores, labels) -> float:
    positives = [score for score, label in zip(scores, labels) if label]
    negatives = [score for score, label in zip(scores, labels) if not label]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_auc_equals_the_pairwise_definition_with_ties():
    generator = np.random.default_rng(0)
    scores = generator.integers(0, 20, size=300).astype(float)  # many ties
    labels = generator.random(300) < 0.3
    assert math.isclose(roc_auc(scores, labels), pairwise_auc(scores, labels), rel_tol=1e-12)
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert math.isnan(roc_auc(np.array([0.1, 0.9]), np.array([1, 1])))


def test_log_loss():
    probabilities = np.array([0.9, 0.2, 0.6])
    labels = np.array([1, 0, 0])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert math.isclose(log_loss(probabilities, labels), expected, rel_tol=1e-12)
