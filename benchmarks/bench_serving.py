"""In-process serving latency of an exported model: raw rows -> probabilities (issue: export and serving).

Trains DLRM with full tables for one epoch on a synthetic Criteo-like cache, exports it, loads the
artifact as `recsys serve` does and times `ServedModel.predict` on raw JSON-like rows at batch 1
and 512, split into encoding (plain Python) and the model. Targets (2 cores): batch-1 p99 <= 1 ms,
batch 512 >= 200k rows/s.

    python benchmarks/bench_serving.py [--rows 100000] [--repeats 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import numpy as np  # noqa: E402
from common import WORKDIR, machine, synthetic_cache, synthetic_file  # noqa: E402

from recsys.export.artifact import export_model  # noqa: E402
from recsys.serving.artifact import ServedModel  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.compaction import serving_model  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.job import Job  # noqa: E402
from recsys.train.loop import train  # noqa: E402

NAMES = ["label", *(f"I{index}" for index in range(1, 14)), *(f"C{index}" for index in range(1, 27))]


def timings(function, repeats: int) -> np.ndarray:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return np.array(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=300)
    arguments = parser.parse_args()
    cache = synthetic_cache(arguments.rows, 0.02)
    job = Job(cache, spec_from_mapping({"strategy": "full"}), "dlrm", TrainConfig(epochs=1, progress=False))
    result = train(job)
    directory = export_model(job, serving_model(job, result.model), WORKDIR / "serving-model", result.metrics)
    served = ServedModel.load(directory)
    lines = synthetic_file(arguments.rows, 0.02).read_text().splitlines()[:512]
    rows = [dict(zip(NAMES, (value or None for value in line.split("\t")))) for line in lines]
    print(f"machine: {machine()}; model: DLRM, full tables, {result.memory.total_bytes / 1e6:.1f} MB")
    print("| batch | step | p50 ms | p99 ms | rows/s |")
    print("|---:|---|---:|---:|---:|")
    for batch, repeats in ((1, arguments.repeats), (512, max(arguments.repeats // 10, 10))):
        part = rows[:batch]
        encoded = served.encoder.encode(part)
        for step, function in (
            ("encode", lambda part=part: served.encoder.encode(part)),
            ("model", lambda encoded=encoded: served.predict_encoded(encoded)),
            ("predict (both)", lambda part=part: served.predict(part)),
        ):
            seconds = timings(function, repeats)
            p50, p99 = np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3
            print(f"| {batch} | {step} | {p50:.3f} | {p99:.3f} | {batch / np.median(seconds):,.0f} |")


if __name__ == "__main__":
    main()
