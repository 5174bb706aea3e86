"""A small, fast training job on the session's synthetic cache."""

from __future__ import annotations

import dataclasses

import pytest

from recsys.tables import spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.job import Job

SMALL_MODEL = {"bottom_mlp": (32,), "top_mlp": (32,)}


@pytest.fixture
def make_job(synthetic_cache):
    def make(tables: dict | None = None, **config) -> Job:
        settings = {"batch_size": 512, "eval_batch_size": 4096, "progress": False, **config}
        return Job(
            cache=synthetic_cache,
            spec=spec_from_mapping(tables or {"strategy": "full"}),
            model="dlrm",
            config=TrainConfig(**settings),
            model_overrides=dict(SMALL_MODEL),
        )

    return make


def with_config(job: Job, **changes) -> Job:
    return dataclasses.replace(job, config=dataclasses.replace(job.config, **changes))
