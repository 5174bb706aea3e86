"""Raw rows (JSON objects keyed by raw field name) -> model inputs, exactly as `recsys data prepare` does.

Each raw field of an artifact names its kind; the kind (`recsys.data.fields`) owns both the polars
rule `prepare` applies to files and the Python/numpy rule applied here to request values, so there
is one definition of every field and an exported model needs neither polars nor the training code.
Tests run both halves over the same raw values and require identical output.

A field absent from a row is an error; null (or "") is a missing value where the kind allows it.
Every error names the row, the field and the value.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.data.fields import KINDS, FieldError, Kind, kind_named


class RowError(ValueError):
    """A raw row that cannot be encoded: names the row (0-based in the request), the field and the problem."""


@dataclass(frozen=True)
class RawField:
    """One raw input field: its name, kind and the model inputs it feeds (none for a label)."""

    name: str
    kind: str
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        try:
            inputs = kind_named(self.kind).model_inputs(self.name)
        except ValueError as error:
            raise ValueError(f"raw field {self.name!r}: {error}") from None
        if list(self.outputs) != inputs:
            raise ValueError(f"raw field {self.name!r} of kind {self.kind} feeds {inputs}, not {list(self.outputs)}")

    @property
    def rule(self) -> Kind:
        return KINDS[self.kind]

    def encode(self, value: Any) -> dict[str, Any]:
        """The prepared values of this field (model input name -> float, id or list of ids)."""
        return dict(zip(self.outputs, self.rule.encode(value)))

    def encode_column(self, values: Sequence) -> dict[str, np.ndarray | list]:
        """The prepared values of this field over a batch: a float32 or int64 array per input, a list per bag."""
        return dict(zip(self.outputs, self.rule.encode_column(values)))

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "outputs": list(self.outputs)}


@dataclass
class FeatureIds:
    """The ids of one sparse feature over a batch: all of them in row order, and how many each row has."""

    values: np.ndarray
    """int64"""
    lengths: np.ndarray
    """int32, one per row (1 for a scalar feature, the bag size for a bag)"""

    @classmethod
    def of(cls, column: np.ndarray | list) -> FeatureIds:
        """From one id per row (an int64 array) or a list per row (a bag)."""
        if isinstance(column, np.ndarray):
            return cls(column.astype(np.int64, copy=False), np.ones(len(column), dtype=np.int32))
        lengths = np.fromiter(map(len, column), dtype=np.int32, count=len(column))
        values = np.fromiter((id_ for bag in column for id_ in bag), dtype=np.int64, count=int(lengths.sum()))
        return cls(values, lengths)

    def bags(self) -> list[list[int]]:
        """Each row's ids as a list (for reading and tests)."""
        ends = np.cumsum(self.lengths)
        return [self.values[end - length : end].tolist() for end, length in zip(ends, self.lengths)]


@dataclass
class EncodedRows:
    """Model inputs of a batch: dense [B, D] float32 and the ids of each sparse feature."""

    dense: np.ndarray
    ids: dict[str, FeatureIds]


class RowEncoder:
    """Encodes JSON rows into the prepared features a model was trained on.

    A batch is encoded column by column: each field's values are checked and converted together
    (numpy where the values allow it), which is several times faster than row by row. When a value
    is refused, the batch is encoded again row by row to name the first bad row and field exactly.
    """

    def __init__(self, fields: Sequence[RawField], dense_features: Sequence[str], sparse_features: Sequence[str]):
        self.fields = list(fields)
        self.by_name = {field.name: field for field in self.fields}
        self.dense_features = list(dense_features)
        self.sparse_features = list(sparse_features)
        produced = {output for field in self.fields for output in field.outputs}
        absent = [name for name in (*self.dense_features, *self.sparse_features) if name not in produced]
        if absent:
            raise ValueError(f"no raw field produces the model's feature(s) {', '.join(absent)}")
        self.encoded_fields = [field for field in self.fields if field.outputs]
        self.required = [field.name for field in self.encoded_fields]
        self.known_names = frozenset(self.by_name)
        self.batched_kinds: dict[str, list[int]] = {}
        for index, field in enumerate(self.encoded_fields):
            if field.rule.batched:
                self.batched_kinds.setdefault(field.kind, []).append(index)
        self.other_fields = [index for index, field in enumerate(self.encoded_fields) if not field.rule.batched]
        names = [field.name for field in self.encoded_fields]
        self.getter = (
            operator.itemgetter(*names) if len(names) > 1 else (lambda row: tuple(row[name] for name in names))
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RowEncoder:
        fields = [RawField(item["name"], item["kind"], tuple(item["outputs"])) for item in values["raw_fields"]]
        return cls(fields, values["dense_features"], values["sparse_features"])

    def to_dict(self) -> dict:
        return {
            "raw_fields": [field.to_dict() for field in self.fields],
            "dense_features": self.dense_features,
            "sparse_features": self.sparse_features,
        }

    def encode_row(self, row: Any, index: int = 0) -> dict[str, Any]:
        """The prepared values of one row; RowError names what is wrong."""
        self.check_row(row, index)
        prepared: dict[str, Any] = {}
        for name, value in row.items():
            try:
                prepared.update(self.by_name[name].encode(value))
            except FieldError as error:
                raise RowError(f"row {index}: {name}: {error}") from None
        return prepared

    def check_row(self, row: Any, index: int) -> None:
        """RowError unless `row` is an object with every required field and no unknown one."""
        if not isinstance(row, Mapping):
            raise RowError(f"row {index}: expected an object keyed by field name, got {type(row).__name__}")
        unknown = [name for name in row if name not in self.by_name]
        if unknown:
            raise RowError(
                f"row {index}: unknown field(s) {', '.join(map(repr, unknown[:5]))}; known: {', '.join(self.by_name)}"
            )
        missing = [name for name in self.required if name not in row]
        if missing:
            raise RowError(f"row {index}: missing field(s) {', '.join(missing)} (send null for a missing value)")

    def columns(self, rows: Sequence[Any]) -> list[Sequence]:
        """The values of each encoded field over `rows` (C-level loops: type checks, itemgetter, zip)."""
        try:
            if not (set(map(type, rows)) <= {dict} and all(map(self.known_names.issuperset, rows))):
                raise KeyError
            table = list(map(self.getter, rows))
        except KeyError:
            for index, row in enumerate(rows):
                self.encode_row(row, index)  # raises the first problem, of shape or value, in row order
            table = [tuple(row[field.name] for field in self.encoded_fields) for row in rows]  # other Mappings
        if not rows:
            return [[] for _ in self.encoded_fields]
        return list(zip(*table))

    def encoded_columns(self, columns: list[Sequence], rows: int) -> dict[str, Any]:
        """Each output feature's values; the fields of one batch-converted kind are converted together
        (one regular expression and one numpy pass for all 26 Criteo hex fields, not 26)."""
        outputs: dict[str, Any] = {}
        for kind, indexes in self.batched_kinds.items():
            values = list(itertools.chain.from_iterable(columns[index] for index in indexes))
            converted = KINDS[kind].encode_column(values)[0].reshape(len(indexes), rows)
            outputs.update((self.encoded_fields[index].outputs[0], row) for index, row in zip(indexes, converted))
        for index in self.other_fields:
            outputs.update(self.encoded_fields[index].encode_column(columns[index]))
        return outputs

    def encode(self, rows: Sequence[Any]) -> EncodedRows:
        """Dense matrix and ids of `rows` (a bag feature keeps every id of the row)."""
        try:
            outputs = self.encoded_columns(self.columns(rows), len(rows))
        except FieldError:
            for index, row in enumerate(rows):
                self.encode_row(row, index)  # raises the RowError of the first bad row
            raise
        dense = np.empty((len(rows), len(self.dense_features)), dtype=np.float32)
        for column, name in enumerate(self.dense_features):
            dense[:, column] = outputs[name]
        return EncodedRows(dense, {name: FeatureIds.of(outputs[name]) for name in self.sparse_features})
