"""What quantizing a model's tables costs: test AUC and log loss before and after, and the bytes saved.

The export quantizes the serving model in place (`recsys.serving.quantize`) and records this in the
artifact's manifest, so whoever serves an int8 model knows what it gave up for its memory.
"""

from __future__ import annotations

from torch import nn

from recsys.data.loader import BatchLoader
from recsys.serving.quantize import quantize_lookup, storage_bytes
from recsys.tables.interface import lookup_of
from recsys.train.evaluation import evaluate
from recsys.train.job import Job

EVALUATION_BATCH_ROWS = 8192


def quantize_and_measure(job: Job, serving: nn.Module, precision: str, progress: bool = False) -> dict:
    """Quantize `serving`'s tables to `precision` in place; its test metrics and table bytes before and after."""
    lookup = lookup_of(serving)
    before = {"table_bytes": storage_bytes(lookup), **metrics_on_test(job, serving, progress)}
    quantize_lookup(lookup, precision)
    after = {"table_bytes": storage_bytes(lookup), **metrics_on_test(job, serving, progress)}
    serving.eval()
    summary: dict = {"precision": precision, "fp32": before, "quantized": after}
    if "auc" in before and "auc" in after:
        summary["auc_change"] = after["auc"] - before["auc"]
        summary["logloss_change"] = after["logloss"] - before["logloss"]
    return summary


def metrics_on_test(job: Job, model: nn.Module, progress: bool) -> dict[str, float]:
    """AUC and log loss on the job's test split (empty when the split has no rows)."""
    loader = BatchLoader(job.cache, "test", EVALUATION_BATCH_ROWS)
    if loader.rows == 0:
        return {}
    return evaluate(model, loader, progress)
