"""Runs training jobs under torchrun for the sharded-training tests; rank 0 writes what they gave.

    python -m torch.distributed.run --standalone --nproc-per-node 2 sharded_worker.py request.json

request.json: {"cache": path, "output": path, "jobs": {name: job settings}}; see `run_job`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from recsys.quiet import quiet_libraries

quiet_libraries()

from recsys.data.cache import PreparedCache  # noqa: E402
from recsys.data.loader import BatchLoader  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.distributed import exit_distributed_process, is_main_process, rank_and_world_size  # noqa: E402
from recsys.train.evaluation import predict  # noqa: E402
from recsys.train.job import Job  # noqa: E402
from recsys.train.loop import train  # noqa: E402

SMALL_MODEL = {"bottom_mlp": (32,), "top_mlp": (32,)}


def make_job(cache: PreparedCache, settings: dict) -> Job:
    """A small DLRM job: `settings` holds "tables" (a spec mapping) and TrainConfig fields."""
    # batch sizes that do not split evenly over 2 ranks: the last rows of a rank's slice are padding
    config = {"batch_size": 1999, "eval_batch_size": 4001, "progress": False, "log_every": 1}
    config.update({key: value for key, value in settings.items() if key != "tables"})
    return Job(
        cache=cache,
        spec=spec_from_mapping(settings["tables"]),
        model="dlrm",
        config=TrainConfig(**config),
        model_overrides=dict(SMALL_MODEL),
    )


def run_job(cache: PreparedCache, settings: dict) -> dict:
    """Train one job; its losses, metrics and test predictions (gathered over ranks)."""
    job = make_job(cache, settings)
    result = train(job)
    rank, world_size = rank_and_world_size()
    loader = BatchLoader(cache, "test", 4096, rank=rank, world_size=world_size)
    probabilities, _ = predict(result.model, loader)
    found = {"losses": result.losses, "metrics": result.metrics, "predictions": probabilities.tolist()}
    kept = getattr(result.model.module.lookup, "kept", None)
    if kept is not None:  # pruning: which ids survived
        found["kept"] = kept.nonzero().squeeze(1).tolist()
    return found


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    cache = PreparedCache.open(Path(request["cache"]))
    results = {name: run_job(cache, settings) for name, settings in request["jobs"].items()}
    if is_main_process():
        Path(request["output"]).write_text(json.dumps(results))
    exit_distributed_process()


if __name__ == "__main__":
    main()
