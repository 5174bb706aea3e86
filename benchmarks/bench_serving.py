"""Serving latency and throughput of an exported model, in-process and over HTTP (export and serving issue).

Trains DLRM (default MLPs) with full tables for one epoch on a synthetic Criteo-like cache and
exports it in fp32 and int8. In-process: `ServedModel` on raw JSON-typed rows (integers as numbers,
hex strings) at batch 1 and 512, encoding and model timed apart. HTTP: a `recsys serve` process per
precision, loaded by `serving/loadgen.py` (a separate process, open loop) at fixed rates of batch-1
requests. Targets (2 cores): in-process batch-1 p99 <= 1 ms, batch 512 >= 200k rows/s, HTTP batch-1
p99 <= 10 ms at 200 requests/s.

    python benchmarks/bench_serving.py [--rows 100000] [--repeats 1000] [--rates 50,100,200,400] [--seconds 15]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import WORKDIR, machine, synthetic_cache, synthetic_file  # noqa: E402
from raw_rows import json_rows  # noqa: E402

from recsys.export.artifact import export_model  # noqa: E402
from recsys.serving.artifact import ServedModel  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.finished import finished_model  # noqa: E402
from recsys.train.job import Job  # noqa: E402
from recsys.train.loop import train  # noqa: E402

LOADGEN = Path(__file__).resolve().parents[1] / "serving" / "loadgen.py"


def timings(function, repeats: int) -> np.ndarray:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return np.array(seconds)


def in_process(directories: dict[str, Path], rows: list[dict], repeats: int) -> None:
    print("| tables | threads | batch | step | p50 ms | p99 ms | rows/s |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for (precision, directory), threads in itertools.product(directories.items(), (1, 2)):
        torch.set_num_threads(threads)
        served = ServedModel.load(directory)
        for batch, count in ((1, repeats), (512, max(repeats // 10, 20))):
            part = rows[:batch]
            encoded = served.encoder.encode(part)
            for step, function in (
                ("encode", lambda part=part, served=served: served.encoder.encode(part)),
                ("model", lambda encoded=encoded, served=served: served.predict_encoded(encoded)),
                ("predict (both)", lambda part=part, served=served: served.predict(part)),
            ):
                function()
                seconds = timings(function, count)
                p50, p99 = np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3
                rate = batch / np.median(seconds)
                print(f"| {precision} | {threads} | {batch} | {step} | {p50:.3f} | {p99:.3f} | {rate:,.0f} |")


def over_http(directories: dict[str, Path], rows: list[dict], rates: str, seconds: float) -> None:
    body = WORKDIR / "serving-request.json"
    body.write_text(json.dumps({"rows": rows[:1]}))
    print("| tables | server threads | rate req/s | achieved | errors | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (precision, directory), threads in itertools.product(directories.items(), (1, 2)):
        port = 8765
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys", "serve", str(directory), "--port", str(port), "--threads", str(threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz")
            command = [sys.executable, str(LOADGEN), "--url", f"http://127.0.0.1:{port}/v1/predict", "--body",
                       str(body), "--rates", rates, "--seconds", str(seconds), "--json"]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            for line in output.splitlines():
                result = json.loads(line)
                times = " | ".join(f"{result[key]:.2f}" for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
                counts = f"{result['rate']:g} | {result['achieved_rate']:g} | {result['errors']}"
                print(f"| {precision} | {threads} | {counts} | {times} |", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--rates", default="50,100,200,400")
    parser.add_argument("--seconds", type=float, default=15.0)
    arguments = parser.parse_args()
    cache = synthetic_cache(arguments.rows, 0.02)
    job = Job(cache, spec_from_mapping({"strategy": "full"}), "dlrm", TrainConfig(epochs=1, progress=False))
    result = train(job)
    directories = {
        precision: export_model(
            finished_model(job, result.model, result.metrics), WORKDIR / f"serving-model-{precision}", precision
        )
        for precision in ("fp32", "int8")
    }
    rows = json_rows(synthetic_file(arguments.rows, 0.02), 512)
    print(f"machine: {machine()}; model: DLRM (MLPs 512-256), full tables, {result.memory.total_bytes / 1e6:.1f} MB")
    for precision, directory in directories.items():
        manifest = ServedModel.load(directory).manifest
        change = (manifest.get("quantization") or {}).get("auc_change")
        note = f", test AUC change {change:+.2e}" if change is not None else ""
        print(f"{precision}: tables {manifest['memory']['table_bytes']:,} bytes{note}")
    in_process(directories, rows, arguments.repeats)
    over_http(directories, rows, arguments.rates, arguments.seconds)


if __name__ == "__main__":
    main()
