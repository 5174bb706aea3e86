"""A prepared cache as MLflow dataset inputs of a run: one per split, the split as its context.

MLflow's runs table fills its Dataset column, and the run page its lineage, from these inputs. Each
split is its own dataset (name = the cache's dataset name, digest = a hash of the cache's fingerprint
and the split), because MLflow keeps one input per dataset digest and run: three contexts of one
digest would collapse into one. The source is the cache directory; the profile holds the split's
rows, the rows of every split, the cache's fingerprint and the raw files it was prepared from.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import polars as pl

from recsys.data.cache import SPLITS, PreparedCache

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput
    from mlflow.types.schema import Schema

CONTEXT_TAG = "mlflow.data.context"
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""MLflow's own context names (its autologging uses "training" and "eval"); a split's rows are its own."""


def split_digest(cache: PreparedCache, split: str) -> str:
    """Changes when the cache is prepared again (its fingerprint) and differs between splits."""
    return hashlib.sha256(f"{cache.fingerprint}:{split}".encode()).hexdigest()[:12]


def column_schema(cache: PreparedCache) -> Schema:
    """The cache's columns as an MLflow schema: ids long (bags arrays of long), dense features float."""
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    def mlflow_type(dtype: pl.DataType) -> DataType | Array:
        if isinstance(dtype, pl.List):
            return Array(mlflow_type(dtype.inner))
        if dtype.is_integer():
            return DataType.long
        return DataType.double if dtype == pl.Float64 else DataType.float

    schema = cache.scan("train").collect_schema()
    return Schema([ColSpec(mlflow_type(dtype), name) for name, dtype in schema.items()])


def profile(cache: PreparedCache, split: str) -> dict:
    return {
        "split": split,
        "rows": cache.rows(split),
        "rows_per_split": {name: cache.rows(name) for name in SPLITS},
        "cache_fingerprint": cache.fingerprint,
        "sources": [source["path"] for source in cache.meta.get("sources", [])],
        "test_sources": [source["path"] for source in cache.meta.get("test_sources", [])],
    }


def dataset_inputs(cache: PreparedCache) -> list[DatasetInput]:
    """One MLflow dataset input per split of `cache` that has rows."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = json.dumps({"uri": str(cache.path.resolve())})
    schema = json.dumps({"mlflow_colspec": column_schema(cache).to_dict()})
    inputs = []
    for split in SPLITS:
        if cache.rows(split) == 0:
            continue
        dataset = Dataset(
            name=cache.name,
            digest=split_digest(cache, split),
            source_type="local",
            source=source,
            schema=schema,
            profile=json.dumps(profile(cache, split)),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, CONTEXTS[split])]))
    return inputs
