"""Training throughput: recsys DLRM (full; hashing, qr, unified at 10x) against a torchrec reference, in one run.

The reference is what one would write by hand with torchrec: an EmbeddingBagCollection with the
same table sizes fed ids that are already row numbers, the same MLP widths, the same DMP wrapping,
planner constraints and fused row-wise Adagrad. So the ratio measures what recsys's lookup layer
(remapping, KJT reassembly) and model code cost. Rounds alternate between candidates so machine
noise hits them alike. Also: the batch loader alone, which must outrun training by 5x.

    python benchmarks/bench_train.py [--rows 1000000] [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recsys.quiet import quiet_libraries  # noqa: E402

quiet_libraries()

import torch  # noqa: E402
from common import machine, synthetic_cache  # noqa: E402
from torch import nn  # noqa: E402
from torchrec.modules.embedding_configs import EmbeddingBagConfig  # noqa: E402
from torchrec.modules.embedding_modules import EmbeddingBagCollection  # noqa: E402
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: E402

from recsys.data.loader import BatchLoader  # noqa: E402
from recsys.tables import spec_from_mapping  # noqa: E402
from recsys.train.config import TrainConfig  # noqa: E402
from recsys.train.distributed import ensure_process_group, make_optimizer, shard_model  # noqa: E402
from recsys.train.job import Job, build  # noqa: E402

BATCH = 4096
BOTTOM, TOP = (512, 256), (512, 256)


class ReferenceDLRM(nn.Module):
    """DLRM written directly against torchrec, independent of recsys.models."""

    def __init__(self, configs: list[EmbeddingBagConfig], dense_features: int, dim: int) -> None:
        super().__init__()
        self.embeddings = EmbeddingBagCollection(tables=configs)
        self.features = len(configs)
        self.dim = dim
        layers, width = [], dense_features
        for out in (*BOTTOM, dim):
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.bottom = nn.Sequential(*layers)
        pairs = (self.features + 1) * self.features // 2
        layers, width = [], pairs + dim
        for out in TOP:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.top = nn.Sequential(*layers, nn.Linear(width, 1))
        rows, columns = torch.triu_indices(self.features + 1, self.features + 1, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("columns", columns, persistent=False)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        dense_vector = self.bottom(dense)
        embeddings = self.embeddings(sparse).values().view(-1, self.features, self.dim)
        vectors = torch.cat([dense_vector.unsqueeze(1), embeddings], 1)
        products = torch.bmm(vectors, vectors.transpose(1, 2))[:, self.rows, self.columns]
        return self.top(torch.cat([dense_vector, products], 1)).squeeze(-1)


def trainer(model: nn.Module, batches: list[tuple]) -> Callable[[int], None]:
    """A function that trains `model` for n steps over `batches`, as recsys does (DMP, fused optimizer)."""
    sharded = shard_model(model, sparse_learning_rate=0.05)
    optimizer = make_optimizer(sharded, "adam", 1e-3)

    def run(steps: int) -> None:
        for index in range(steps):
            batch = batches[index % len(batches)]
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(sharded(batch[0], batch[1]), batch[2])
            loss.backward()
            optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    ensure_process_group()
    cache = synthetic_cache(arguments.rows)
    loader = BatchLoader(cache, "train", BATCH, shuffle=True)
    batches = [batch for _, batch in zip(range(arguments.steps), loader)]
    print(machine())

    candidates = {}
    for name, tables in (
        ("recsys full", {"strategy": "full"}),
        ("recsys hashing-10x", {"strategy": "hashing", "compression": 10}),
        ("recsys qr-10x", {"strategy": "qr", "compression": 10}),
        ("recsys unified-10x", {"strategy": "unified", "compression": 10}),
    ):
        job = Job(cache, spec_from_mapping(tables), "dlrm", TrainConfig(), {"bottom_mlp": BOTTOM, "top_mlp": TOP})
        model, _ = build(job)
        candidates[name] = trainer(model, [(batch.dense, batch.sparse, batch.labels) for batch in batches])
        if name == "recsys full":
            lookup = model.lookup
            configs = [
                EmbeddingBagConfig(
                    name=config.name,
                    embedding_dim=config.embedding_dim,
                    num_embeddings=config.num_embeddings,
                    feature_names=config.feature_names,
                )
                for config in lookup.table_configs()
            ]
            remapped = [(batch.dense, lookup.remap(batch.sparse), batch.labels) for batch in batches]
    torch.manual_seed(0)
    reference = ReferenceDLRM(configs, len(cache.schema.dense_features), 16)
    candidates["torchrec reference"] = trainer(reference, remapped)

    for run in candidates.values():
        run(3)  # warm-up
    timings = {name: [] for name in candidates}
    for _ in range(arguments.rounds):
        for name, run in candidates.items():
            started = time.perf_counter()
            run(arguments.steps)
            timings[name].append((time.perf_counter() - started) / arguments.steps)
    reference_step = statistics.median(timings["torchrec reference"])
    print(f"\nbatch {BATCH}, 26 features, dim 16, DLRM bottom {BOTTOM} top {TOP}")
    print(f"median of {arguments.rounds} rounds x {arguments.steps} steps")
    print(f"{'candidate':<22}{'ms/step':>9}{'samples/s':>12}{'vs reference':>14}")
    for name, values in timings.items():
        step = statistics.median(values)
        print(f"{name:<22}{step * 1000:>9.1f}{BATCH / step:>12,.0f}{reference_step / step:>13.2f}x")

    started = time.perf_counter()
    rows = sum(len(batch) for batch in BatchLoader(cache, "train", BATCH, shuffle=True))
    loader_rate = rows / (time.perf_counter() - started)
    train_rate = BATCH / statistics.median(timings["recsys full"])
    print(f"\nloader alone: {loader_rate:,.0f} rows/s = {loader_rate / train_rate:.1f}x training (recsys full)")


if __name__ == "__main__":
    main()
