"""CTR models. Each receives a built lookup module (never a table config) and returns click logits."""

from recsys.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
