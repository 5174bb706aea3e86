"""Model name -> class. Every model is built from a lookup module, the dense width and its config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from recsys.config import ConfigError, from_mapping
from recsys.models.dcnv2 import DCNv2
from recsys.models.deepfm import DeepFM
from recsys.models.dlrm import DLRM
from recsys.models.fm import FM
from recsys.models.lr import LR
from recsys.tables.interface import LookupModule

MODELS: dict[str, type[nn.Module]] = {"lr": LR, "fm": FM, "deepfm": DeepFM, "dcnv2": DCNv2, "dlrm": DLRM}


def build_model(
    name: str, lookup: LookupModule, dense_features: int, overrides: Mapping[str, Any] | None = None
) -> nn.Module:
    """Model `name` over `lookup`; `overrides` set fields of the model's config (unknown keys are errors)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    model_class = MODELS[name]
    config = from_mapping(model_class.config_type, overrides or {}, f"model {name!r}")
    return model_class(lookup, dense_features, config)
