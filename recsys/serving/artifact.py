"""Load an inference artifact (see `recsys.export.artifact`) and predict from raw rows.

Needs torch, torchrec and the model and table definitions; never polars, MLflow or the training code.
The artifact is verified as a whole first (`recsys.export.format.verified`); tensors load with weights_only=True.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.stats import ReplayedStatistics
from recsys.errors import reason_of
from recsys.export.format import MANIFEST, MODEL_FILE, STATISTICS_FILE, ArtifactError, verified
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
        """Load a verified artifact; with `verify_key` (a PEM public key) it must also carry a valid signature.

        Checksums prove the files are the ones exported, not that they fit together: a manifest rewritten
        with fresh checksums, or tensors that are not what recsys writes, stop with an `ArtifactError`.
        """
        directory = Path(directory)
        manifest = verified(directory)
        if verify_key is not None:
            from recsys.export.signing import verify_signature

            verify_signature(directory, Path(verify_key))
        try:
            model = model_of(directory, manifest)
            encoder = RowEncoder.from_dict(manifest["encoder"])
        except ArtifactError:
            raise
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise ArtifactError(
                f"{directory}: its manifest does not describe the model it holds ({reason_of(error)}); "
                "export the model again"
            ) from error
        return cls(model.eval(), encoder, manifest, directory)

    @torch.no_grad()
    def predict_encoded(self, encoded: EncodedRows) -> torch.Tensor:
        dense = torch.from_numpy(encoded.dense)
        return torch.sigmoid(self.model(dense, features(encoded)))

    def predict(self, rows: Sequence[Any]) -> torch.Tensor:
        """Click probabilities of raw rows (RowError names a bad row)."""
        return self.predict_encoded(self.encoder.encode(rows))


def model_of(directory: Path, manifest: dict) -> nn.Module:
    """The model the manifest describes, with the weights of its model file."""
    arrays = load_tensors(directory / STATISTICS_FILE)
    statistics = ReplayedStatistics.from_record(
        manifest["statistics"], {key: value.numpy() for key, value in arrays.items()}
    )
    spec = spec_from_mapping(manifest["tables"], where=str(directory / MANIFEST))
    lookup = build_serving_lookup(spec, statistics, manifest.get("table_shape"))
    model_settings = manifest["model"]
    model = build_model(model_settings["name"], lookup, model_settings["dense_features"], model_settings["overrides"])
    precision = manifest.get("precision", "fp32")
    if precision != "fp32":  # the state holds quantized tables: load it into quantized storage
        quantize_lookup(lookup, precision)
    model.load_state_dict(load_tensors(directory / MODEL_FILE))
    if precision == "fp32":  # the same numbers, read by fbgemm's fused inference kernel
        quantize_lookup(lookup, precision)
    return model


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A file of named tensors as `torch.save` writes them; anything else (a pickle, a cut-off file) refused."""
    try:
        with warnings.catch_warnings():  # torch warns about a pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        raise ArtifactError(f"{path}: holds Python objects besides tensors, which are never loaded") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        reason = reason_of(error)
        raise ArtifactError(f"{path}: not a tensor file recsys wrote ({reason}); export the model again") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ArtifactError(f"{path}: holds {type(state).__name__}, not named tensors; export the model again")
    return state


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
