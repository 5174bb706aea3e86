"""The prepared schema: what every dataset adapter turns its raw rows into.

A prepared row has a binary `label`, float32 dense features and int64 categorical ids.
Criteo's raw format (label, I1..I13 integers, C1..C26 8-digit hex strings) maps onto it as:

    raw      label  I1 .. I13            C1 .. C26
    prepared label  log(1 + max(x, 0))  int(hex, 16); missing -> MISSING_ID

Dense values are transformed once, here, so that training and serving share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING_ID = -1
"""The id of a missing categorical value: a category of its own (missingness carries signal in CTR logs)."""


@dataclass(frozen=True)
class DatasetSchema:
    """Column names of a prepared dataset, in the order batches carry them."""

    name: str
    dense_features: tuple[str, ...]
    sparse_features: tuple[str, ...]
    label: str = "label"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.label, *self.dense_features, *self.sparse_features)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "dense_features": list(self.dense_features),
            "sparse_features": list(self.sparse_features),
        }

    @classmethod
    def from_dict(cls, values: dict) -> DatasetSchema:
        return cls(
            name=values["name"],
            label=values["label"],
            dense_features=tuple(values["dense_features"]),
            sparse_features=tuple(values["sparse_features"]),
        )


CRITEO = DatasetSchema(
    name="criteo",
    dense_features=tuple(f"I{index}" for index in range(1, 14)),
    sparse_features=tuple(f"C{index}" for index in range(1, 27)),
)


def transform_dense_array(values: np.ndarray) -> np.ndarray:
    """The dense transform log(1 + max(x, 0)) of raw integers; NaN stands for missing and becomes 0."""
    clipped = np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0.0, None)
    return np.log1p(clipped).astype(np.float32)
