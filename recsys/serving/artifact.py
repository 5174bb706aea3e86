"""Load an inference artifact (see `recsys.export.artifact`) and predict from raw rows.

Needs torch, torchrec and the model and table definitions; never polars, MLflow or the training code.
The artifact is verified as a whole first (`recsys.export.format.verified`); tensors load with weights_only=True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import ReplayedStatistics
from recsys.export.format import MANIFEST, MODEL_FILE, STATISTICS_FILE, verified
from recsys.models import build_model
from recsys.serving.rows import EncodedRows, RowEncoder
from recsys.tables import spec_from_mapping
from recsys.tables.quantize import quantize_lookup
from recsys.tables.registry import build_serving_lookup


@dataclass
class ServedModel:
    """A loaded artifact: the model in eval mode, the encoder of its raw rows, and its manifest."""

    model: nn.Module
    encoder: RowEncoder
    manifest: dict
    directory: Path | None = None

    @classmethod
    def load(cls, directory: str | Path, verify_key: Path | None = None) -> ServedModel:
        """Load a verified artifact; with `verify_key` (a PEM public key) it must also carry a valid signature."""
        directory = Path(directory)
        manifest = verified(directory)
        if verify_key is not None:
            from recsys.export.signing import verify_signature

            verify_signature(directory, Path(verify_key))
        arrays = torch.load(directory / STATISTICS_FILE, weights_only=True)
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
        model.load_state_dict(torch.load(directory / MODEL_FILE, weights_only=True))
        if precision == "fp32":  # the same numbers, read by fbgemm's fused inference kernel
            quantize_lookup(lookup, precision)
        return cls(model.eval(), RowEncoder.from_dict(manifest["encoder"]), manifest, directory)

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
