"""A training job: what to train (data, table spec, model, settings) and its seeded, unsharded model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch
from torch import nn

from recsys.data.cache import PreparedCache
from recsys.data.stats import FeatureStatistics
from recsys.models import build_model
from recsys.tables import build_lookup
from recsys.tables.interface import MemoryReport
from recsys.tables.spec import TableSpec
from recsys.train.config import TrainConfig


@dataclass(frozen=True)
class Job:
    """What to train: data, table spec, model and its overrides, training settings."""

    cache: PreparedCache
    spec: TableSpec
    model: str
    config: TrainConfig
    model_overrides: dict = field(default_factory=dict)
    spec_text: str = ""

    def params(self) -> dict:
        return {
            "data": {
                "path": str(self.cache.path.resolve()),
                "name": self.cache.name,
                "fingerprint": self.cache.fingerprint,
                **self.cache.meta["splits"],
            },
            "tables": self.spec.to_dict(),
            "model": {"name": self.model, **self.model_overrides},
            "train": self.config.to_dict(),
        }

    def resume_key(self) -> dict:
        """What a resumed run must share with the checkpoint's run to continue it.

        How tables are sharded is free: a checkpoint resumes on any world size and plan.
        """
        free = {
            "epochs",
            "patience",
            "lr_decay",
            "resume",
            "checkpoint_dir",
            "overwrite",
            "keep",
            "progress",
            "log_every",
            "eval_batch_size",
        }
        free |= {"sharding", "rank_memory"}
        params = self.params()
        params["train"] = {name: value for name, value in params["train"].items() if name not in free}
        params["tables"] = {name: value for name, value in params["tables"].items() if name != "sharding"}
        return json.loads(json.dumps(params))  # as a checkpoint stores it: tuples become lists

    def tags(self) -> dict[str, str]:
        """The axes runs are compared along, as MLflow tags (the tracker adds the achieved compression)."""
        return {
            "strategy": self.spec.strategy,
            "budget": self.spec.budget_label(),
            "model": self.model,
            "dataset": self.cache.name,
            "seed": str(self.config.seed),
            "embedding_dim": str(self.spec.embedding_dim),
        }


def build(job: Job, statistics: FeatureStatistics | None = None) -> tuple[nn.Module, MemoryReport]:
    """The seeded, unsharded model of a job and its table memory (its lookup built from `statistics`,
    by default the cache's; a `RecordingStatistics` keeps what the lookup asked for)."""
    torch.manual_seed(job.config.seed)
    lookup = build_lookup(job.spec, statistics or job.cache.statistics())
    model = build_model(job.model, lookup, len(job.cache.schema.dense_features), job.model_overrides)
    return model, lookup.memory_report()
