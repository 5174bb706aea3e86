"""Sharded training over 2 processes (gloo, CPU) gives what one process gives, for every strategy
and sharding type, and checkpoints move between world sizes.

Each case launches `sharded_worker.py` under torchrun (`--standalone`: a free port per launch, so
parallel test runs cannot collide) and compares with the same jobs run here in one process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.train.finished import finished_model_of_checkpoint
from tests.train.sharded_worker import run_job

WORKER = Path(__file__).with_name("sharded_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
STRATEGIES = {
    "full": {"strategy": "full"},
    "hashing": {"strategy": "hashing", "compression": 10},
    "qr": {"strategy": "qr", "compression": 10},
    "unified": {"strategy": "unified", "compression": 10, "lookups": "cardinality", "chunk_dim": 4},
    "mixed_dim": {"strategy": "mixed_dim", "compression": 2},
    "pruned": {"strategy": "pruned", "compression": 10, "prune_start": 0.2, "prune_end": 0.6, "updates": 4},
    "graphhash": {"strategy": "graphhash", "compression": 10, "edges": "rows"},
    "optembed": {"strategy": "optembed", "compression": 10, "generations": 2, "population": 6, "parents": 3},
    "robe": {"strategy": "robe", "compression": 10},
    "tt": {"strategy": "tt", "compression": 10},
    "dhe": {"strategy": "dhe", "compression": 100},
    "cce": {"strategy": "cce", "compression": 10},
    "managed": {"strategy": "managed", "compression": 10, "eviction_interval": 5},
    "pruned_beside_a_data_parallel_table": {
        "strategy": "pruned",
        "compression": 10,
        "threshold": "none",
        "sharding": {"C1": "data_parallel"},  # a whole table on every rank beside sharded ones
    },
}
NO_TABLES = {"dhe"}
"""Strategies without tables (a dense decoder, replicated whatever the sharding type): run once."""
SHARDINGS = ["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]
OPTIMIZERS = {"column_wise": "adagrad", "data_parallel": "sgd"}
"""Row-wise Adagrad keeps one state per row of each column shard, so column-wise needs exact Adagrad
to equal one process. Data-parallel tables train on all-reduced dense gradients whose rounding
differs from one process's sums by ~1e-9. Adagrad's first step on a row is lr * g / rms(g), whose size
does not depend on |g|: where a row's gradient nearly cancels, rounding decides its direction (2e-4
in predictions here). The data-parallel path is compared with SGD, which does not amplify it."""
SHARED_ROWS = {"tt", "managed"}
"""Strategies whose rows many ids of a batch read (tensor-train cores, managed tables' shared row before
ids are admitted): there exact Adagrad's first step
meets gradients that nearly cancel in many elements, and the column shards' sums differ from one
process's by rounding (7e-4 in predictions), so these are compared with SGD column-wise too."""


def run_ranks(synthetic_cache, jobs: dict, directory: Path, processes: int = 2, timeout: int = 600) -> dict:
    """Run `jobs` under torchrun with `processes` ranks; kill the whole process group whatever happens."""
    request = directory / "request.json"
    output = directory / "results.json"
    request.write_text(json.dumps({"cache": str(synthetic_cache.path), "output": str(output), "jobs": jobs}))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        str(WORKER),
        str(request),
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None or process.returncode != 0:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == 0, f"torchrun failed ({process.returncode}):\n{log[-6000:]}"
    return json.loads(output.read_text())


def differences(name: str, found: dict, expected: dict, tolerance: float = TOLERANCE) -> list[str]:
    """What differs beyond `tolerance` between a sharded result and the single-process one."""
    problems = []
    losses, reference = np.array(found["losses"]), np.array(expected["losses"])
    if losses.shape != reference.shape or np.abs(losses - reference).max() > tolerance:
        problems.append(f"{name}: losses {losses[:4]}... against {reference[:4]}...")
    predictions, reference = np.array(found["predictions"]), np.array(expected["predictions"])
    if predictions.shape != reference.shape or np.abs(predictions - reference).max() > tolerance:
        gap = np.abs(predictions - reference).max() if predictions.shape == reference.shape else "shape"
        problems.append(f"{name}: test predictions differ by {gap}")
    if found.get("kept") != expected.get("kept"):
        problems.append(f"{name}: different ids survive pruning")
    for metric in ("val/auc", "test/auc", "test/logloss"):
        if abs(found["metrics"][metric] - expected["metrics"][metric]) > tolerance:
            problems.append(f"{name}: {metric} {found['metrics'][metric]} against {expected['metrics'][metric]}")
    return problems


@pytest.mark.parametrize("sharding", SHARDINGS)
def test_two_ranks_train_like_one_process(synthetic_cache, tmp_path, sharding):
    optimizer = OPTIMIZERS.get(sharding, "rowwise_adagrad")
    jobs = {
        name: {
            "tables": tables,
            "sharding": sharding,
            "sparse_optimizer": "sgd" if name in SHARED_ROWS and sharding == "column_wise" else optimizer,
        }
        for name, tables in STRATEGIES.items()
        if name not in NO_TABLES or sharding == "table_wise"
    }
    sharded = run_ranks(synthetic_cache, jobs, tmp_path)
    problems = []
    for name, settings in jobs.items():
        problems += differences(name, sharded[name], run_job(synthetic_cache, settings))
    assert not problems, "\n".join(problems)


def test_checkpoints_move_between_world_sizes(synthetic_cache, tmp_path):
    """2 ranks (row-wise) -> 1 process, and 1 process -> 2 ranks (table-wise), against straight runs; the
    row-wise checkpoint of 2 ranks also exports (unsharded) the model those ranks tested."""
    tables = STRATEGIES["hashing"]
    straight = run_job(synthetic_cache, {"tables": tables, "epochs": 2})
    down, up = str(tmp_path / "two-to-one"), str(tmp_path / "one-to-two")
    first_half = {"tables": tables, "epochs": 1, "sharding": "row_wise", "checkpoint_dir": down}
    first = run_ranks(synthetic_cache, {"first": first_half}, tmp_path)["first"]
    exported = finished_model_of_checkpoint(Path(down))  # row-wise shards of 2 ranks, read into one model
    exported_auc = exported.test_metrics(exported.model)["auc"]
    assert exported_auc == pytest.approx(first["metrics"]["test/auc"], abs=TOLERANCE)
    resumed_down = run_job(synthetic_cache, {"tables": tables, "epochs": 2, "checkpoint_dir": down, "resume": True})
    run_job(synthetic_cache, {"tables": tables, "epochs": 1, "checkpoint_dir": up})
    second_half = {"tables": tables, "epochs": 2, "sharding": "table_wise", "checkpoint_dir": up, "resume": True}
    resumed_up = run_ranks(synthetic_cache, {"second": second_half}, tmp_path)["second"]
    for resumed in (resumed_down, resumed_up):
        assert len(resumed["losses"]) < len(straight["losses"])  # only the second epoch was trained
        for metric in ("val/auc", "test/auc", "test/logloss"):
            assert resumed["metrics"][metric] == pytest.approx(straight["metrics"][metric], abs=TOLERANCE)
        np.testing.assert_allclose(resumed["predictions"], straight["predictions"], rtol=0, atol=TOLERANCE)
