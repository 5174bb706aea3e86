"""What quantizing a model's tables costs: test AUC and log loss before and after, and the bytes saved.

The export quantizes the serving model in place (`recsys.tables.quantize`) and records this in the
artifact's manifest, so whoever serves an int8 model knows what it gave up for its memory. The test
metrics come from the finished model (`FinishedModel.test_metrics`): export reads no data itself.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from recsys.tables.interface import lookup_of
from recsys.tables.quantize import quantize_lookup, storage_bytes


def quantize_and_measure(
    serving: nn.Module, test_metrics: Callable[[nn.Module], dict[str, float]], precision: str
) -> dict:
    """Quantize `serving`'s tables to `precision` in place; its test metrics and table bytes before and after."""
    lookup = lookup_of(serving)
    before = {"table_bytes": storage_bytes(lookup), **test_metrics(serving)}
    quantize_lookup(lookup, precision)
    after = {"table_bytes": storage_bytes(lookup), **test_metrics(serving)}
    serving.eval()
    summary: dict = {"precision": precision, "fp32": before, "quantized": after}
    if "auc" in before and "auc" in after:
        summary["auc_change"] = after["auc"] - before["auc"]
        summary["logloss_change"] = after["logloss"] - before["logloss"]
    return summary
