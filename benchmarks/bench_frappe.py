"""Training throughput on Frappe with the experiment's settings, against FuxiCTR's (issue 16).

Trains DeepFM and DCNv2 with full tables on the Frappe sample (../shared/data/frappe, prepared
80/10/10 as experiments/frappe.toml does) as `recsys train` processes, for a fixed number of
epochs, with two sets of settings, alternating rounds so machine noise hits both alike:

    fused     the earlier settings: fused row-wise Adagrad on the tables (lr 0.2), batch 1024
    adam      experiments/frappe.toml's: Adam with L2 weight decay on data-parallel tables, batch 1024

and reads `train/samples_per_s` of the last epoch. FuxiCTR 2.3.10 trained the same split at 17.2k
samples/s on this machine (experiments/results/fuxictr_reference.md): the target is 2x that.

    python benchmarks/bench_frappe.py [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORKDIR, machine  # noqa: E402

FRAPPE = Path(__file__).resolve().parents[2] / "shared" / "data" / "frappe" / "frappe.validation.libfm"
FUXICTR_SAMPLES_PER_S = 17_200
MODEL_SETTINGS = {
    "deepfm": ["--set", "model.dropout=0.2", "--set", "model.batch_norm=true"],
    "dcnv2": ["--set", "model.dropout=0.2", "--set", "model.batch_norm=true", "--set", "model.hidden=[400,400,400]"],
}
SETTINGS = {
    "fused": ["--sparse-lr", "0.2", "--batch-size", "1024"],
    "adam": [
        *["--sharding", "data_parallel", "--sparse-optimizer", "adam", "--sparse-lr", "0.0016"],
        *["--sparse-weight-decay", "0.02", "--batch-size", "1024"],
    ],
}


def prepared_frappe() -> Path:
    cache = WORKDIR / "frappe-cache"
    if not (cache / "meta.json").exists():
        command = [sys.executable, "-m", "recsys", "data", "prepare", str(FRAPPE), "--format", "frappe"]
        subprocess.run([*command, "-o", str(cache), "--overwrite"], check=True, capture_output=True)
    return cache


def samples_per_s(cache: Path, model: str, settings: list[str], epochs: int) -> float:
    spec = WORKDIR / "frappe-full.toml"
    spec.write_text('strategy = "full"\ninit_std = 0.01\n')
    command = [sys.executable, "-m", "recsys", "train", "--data", str(cache), "--tables", str(spec)]
    command += ["--model", model, "--epochs", str(epochs), "--no-progress", "--no-tracking"]
    done = subprocess.run([*command, *MODEL_SETTINGS[model], *settings], check=True, capture_output=True, text=True)
    return float(re.search(r"train/samples_per_s: ([0-9.e+]+)", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    arguments = parser.parse_args()
    if not FRAPPE.exists():
        sys.exit(f"{FRAPPE} is absent: this benchmark needs the shared Frappe sample")
    print(machine())
    cache = prepared_frappe()
    print("| model | settings | samples/s (median of rounds) | vs fused | vs FuxiCTR (17.2k) |")
    print("|---|---|---:|---:|---:|")
    for model in MODEL_SETTINGS:
        found = {name: [] for name in SETTINGS}
        for _ in range(arguments.rounds):
            for name, settings in SETTINGS.items():
                found[name].append(samples_per_s(cache, model, settings, arguments.epochs))
        fused = statistics.median(found["fused"])
        for name, values in found.items():
            value = statistics.median(values)
            print(f"| {model} | {name} | {value:,.0f} | {value / fused:.2f}x | {value / FUXICTR_SAMPLES_PER_S:.2f}x |")


if __name__ == "__main__":
    main()
