"""Budget arithmetic: how many bytes a full table takes, and how to share a budget among features.

Pure functions, apart from the modules, so the sizing is easy to read and to test.
"""

from __future__ import annotations

FLOAT_BYTES = 4
INDEX_BYTES = 8
"""Bytes per vocabulary id of an exact id -> row map (one int64)."""
ROWWISE_ADAGRAD_STATE_BYTES = 4
"""Row-wise Adagrad keeps one float per row (the fused optimizer recsys trains with)."""


def full_rows(cardinality: int) -> int:
    """Rows of the reference full table: one per id seen in training plus one out-of-vocabulary row."""
    return cardinality + 1


def exact_bytes(cardinality: int, embedding_dim: int) -> int:
    """Bytes of one feature mapped exactly: a full table plus its vocabulary index."""
    return full_rows(cardinality) * embedding_dim * FLOAT_BYTES + INDEX_BYTES * cardinality


def full_table_bytes(cardinalities: dict[str, int], embedding_dim: int) -> int:
    """Parameter bytes of the reference full table over all features (the denominator of compression)."""
    return sum(full_rows(cardinality) * embedding_dim * FLOAT_BYTES for cardinality in cardinalities.values())


def water_fill(sizes: dict[str, int], budget: int) -> dict[str, int]:
    """Share `budget` among features, never giving one more than its size: the largest are cut most.

    Finds the cap c with sum(min(size, c)) = budget, so small features stay whole and the big ones
    (where compression pays) share what is left equally.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if sum(sizes.values()) <= budget:
        return dict(sizes)
    remaining = budget
    ordered = sorted(sizes.items(), key=lambda item: item[1])
    shares = {}
    for index, (feature, size) in enumerate(ordered):
        cap = remaining / (len(ordered) - index)
        shares[feature] = min(size, cap)
        remaining -= shares[feature]
    return {feature: int(share) for feature, share in shares.items()}


def budget_bytes(compression: float | None, total_bytes: int | None, full_bytes: int) -> int:
    """The byte budget of a spec sized by `compression` (against `full_bytes`) or by `bytes`."""
    if compression is not None:
        return int(full_bytes / compression)
    if total_bytes is None:
        raise ValueError("a budget needs compression or bytes")
    return total_bytes


def held_exactly(cardinalities: dict[str, int], embedding_dim: int, shares: dict[str, int]) -> list[str]:
    """The features whose share holds their exact table and its vocabulary index (`exact_bytes`), in
    feature order: where a strategy's `exact_when_fits` keeps them exact instead of compressing them."""
    return [feature for feature, count in cardinalities.items() if shares[feature] >= exact_bytes(count, embedding_dim)]


def feature_shares(
    cardinalities: dict[str, int],
    embedding_dim: int,
    compression: float | None,
    total_bytes: int | None,
    full_bytes: int,
) -> dict[str, int]:
    """Each feature's share of a budget, water-filled over the features' exact sizes."""
    sizes = {feature: exact_bytes(count, embedding_dim) for feature, count in cardinalities.items()}
    return water_fill(sizes, budget_bytes(compression, total_bytes, full_bytes))
