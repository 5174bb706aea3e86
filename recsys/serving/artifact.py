"""Load an inference artifact (see `recsys.export.artifact`) and predict from raw rows.

Needs torch, torchrec and the model and table definitions; never polars, MLflow or the training code.
Every file's checksum is verified first; tensors load with weights_only=True.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import ReplayedStatistics
from recsys.models import build_model
from recsys.serving.quantize import quantize_lookup
from recsys.serving.rows import EncodedRows, RowEncoder
from recsys.tables import spec_from_mapping
from recsys.tables.registry import build_serving_lookup

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """An artifact that is incomplete, altered or of another format version."""


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verified(directory: Path) -> dict:
    """The manifest, after checking that every file it lists has its recorded sha256."""
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an exported model (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format {manifest.get('format_version')} is not {FORMAT_VERSION}; export again")
    for name, expected in manifest["files"].items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{file} is missing")
        if sha256(file) != expected:
            raise ArtifactError(f"{file}: checksum mismatch; the artifact was altered or is incomplete")
    return manifest


@dataclass
class ServedModel:
    """A loaded artifact: the model in eval mode, the encoder of its raw rows, and its manifest."""

    model: nn.Module
    encoder: RowEncoder
    manifest: dict

    @classmethod
    def load(cls, directory: str | Path) -> ServedModel:
        directory = Path(directory)
        manifest = verified(directory)
        arrays = torch.load(directory / "statistics.pt", weights_only=True)
        statistics = ReplayedStatistics.from_record(
            manifest["statistics"], {key: value.numpy() for key, value in arrays.items()}
        )
        spec = spec_from_mapping(manifest["tables"], where=str(directory / MANIFEST))
        lookup = build_serving_lookup(spec, statistics, manifest.get("table_shape"))
        model_settings = manifest["model"]
        model = build_model(
            model_settings["name"], lookup, model_settings["dense_features"], model_settings["overrides"]
        )
        precision = manifest.get("precision", "fp32")
        if precision != "fp32":  # the state holds quantized tables: load it into quantized storage
            quantize_lookup(lookup, precision)
        model.load_state_dict(torch.load(directory / "model.pt", weights_only=True))
        if precision == "fp32":  # the same numbers, read by fbgemm's fused inference kernel
            quantize_lookup(lookup, precision)
        return cls(model.eval(), RowEncoder.from_dict(manifest["encoder"]), manifest)

    @torch.no_grad()
    def predict_encoded(self, encoded: EncodedRows) -> torch.Tensor:
        dense = torch.from_numpy(encoded.dense)
        return torch.sigmoid(self.model(dense, features(encoded)))

    def predict(self, rows: Sequence[Any]) -> torch.Tensor:
        """Click probabilities of raw rows (RowError names a bad row)."""
        return self.predict_encoded(self.encoder.encode(rows))


def features(encoded: EncodedRows) -> KeyedJaggedTensor:
    """The ids of encoded rows as a KeyedJaggedTensor, feature-major, a bag's ids together."""
    keys = list(encoded.ids)
    columns = [encoded.ids[key] for key in keys]
    return KeyedJaggedTensor(
        keys=keys,
        values=torch.from_numpy(
            np.concatenate([column.values for column in columns]) if columns else np.empty(0, np.int64)
        ),
        lengths=torch.from_numpy(
            np.concatenate([column.lengths for column in columns]) if columns else np.empty(0, np.int32)
        ),
    )
