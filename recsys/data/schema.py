"""The prepared schema: what every dataset format turns its raw rows into, derived from its fields.

A prepared row has a binary label, float32 dense features and int64 categorical ids (or a list of
ids for a bag). A format is a list of (raw field name, kind) (see `recsys.data.fields`); its schema
and the raw fields a served model takes are derived from that list here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recsys.data.fields import Kind

Fields = Sequence[tuple[str, Kind]]


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


def schema_of(name: str, fields: Fields) -> DatasetSchema:
    """The prepared schema of a format's fields: its one label, dense and sparse outputs in field order."""
    outputs = [output for field, kind in fields for output in kind.outputs(field)]
    labels = [output for output, role in outputs if role == "label"]
    if len(labels) != 1:
        raise ValueError(f"format {name} needs exactly one label field, has {labels}")
    return DatasetSchema(
        name=name,
        label=labels[0],
        dense_features=tuple(output for output, role in outputs if role == "dense"),
        sparse_features=tuple(output for output, role in outputs if role == "sparse"),
    )


def raw_fields_of(fields: Fields) -> list[dict]:
    """The raw fields a served model of this format takes: name, kind and the model inputs each feeds
    (ordering columns such as timestamps are not part of a served row)."""
    return [
        {"name": field, "kind": kind.name, "outputs": kind.model_inputs(field)}
        for field, kind in fields
        if all(role != "order" for _, role in kind.outputs(field))
    ]
