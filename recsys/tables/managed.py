"""`managed`: collision-free tables; an id that earns a row keeps it alone, the rest share one row.

Liu et al., "Monolith: Real Time Recommendation System With Collisionless Embedding Table",
ORSUM@RecSys 2022 (collisionless tables, frequency filtering, expiry), built on torchrec's
managed-collision modules (`MCHManagedCollisionModule`, the zero-collision hash). Each feature
has a table of n rows; n - 1 of them belong to one id each, the last is shared by every id
without a row. During training the ids of every batch are counted; every `eviction_interval`
steps the ids seen at least `admit_count` times in that window compete for rows with the ids
that hold them, by the eviction policy:

    lfu:   ids holding rows keep their counts for life; a newcomer takes the row of the least used
    lru:   the rows of the ids seen longest ago go first (Monolith's expiry of stale ids)

    window of 20 steps:  id 977 seen 5 times, admit_count 2   -> competes for a row
                         id 31  seen once                     -> stays on the shared row
    after the window:    977 -> row 412 (the row of an evicted id, reset to zeros)

A row that changes owner is reset to zeros, so a new id does not inherit a stranger's vector
(torchrec's own `evict` hook is a no-op). Serving (eval mode) only reads: an id's row, or the
shared row. The id -> row state (sorted ids, their rows, the policy's counts or times) is in the
module's state, so checkpoints resume it and artifacts serve it.

Memory: per managed feature n rows of dim floats plus 24 bytes per row of state (the sorted id,
its row and the policy's count, each int64, as torchrec keeps them) and 40 bytes per feature; n
from the feature's share of the budget, water-filled as `hashing` does; a feature whose share holds
its whole vocabulary is exact instead.

Parallelism: the tables are ordinary torchrec tables that DMP shards. The id -> row state must be
the same on every rank, so in training every rank counts the ids of the whole global batch (the
ranks' ids are all-gathered first, a few hundred kilobytes a step) and reaches the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mc_modules import LFU_EvictionPolicy, LRU_EvictionPolicy, MCHManagedCollisionModule
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, feature_shares, full_rows, held_exactly
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.shards import write_rows
from recsys.tables.spec import BudgetSpec
from recsys.tables.vocabulary import Vocabularies

STATE_BYTES_PER_ROW = 24
"""torchrec's state per row: the sorted raw id, its row, the policy's count or time (three int64)."""
FIXED_STATE_BYTES = 40
"""torchrec's state per feature: its row range, step count, open-slot count and a delimiter (five int64)."""


@dataclass(frozen=True)
class ManagedSpec(BudgetSpec):
    eviction: Literal["lfu", "lru"] = "lfu"
    admit_count: int = 1
    """An id competes for a row only if seen at least this many times within one window."""
    eviction_interval: int = 20
    """Training steps per window: ids are admitted and evicted once per window."""
    exact_when_fits: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.admit_count < 1 or self.eviction_interval < 1:
            raise ValueError("admit_count and eviction_interval must be at least 1")
        if self.rows is not None and self.rows < 2:
            raise ValueError(f"managed tables need rows of at least 2 (one id and the shared row), got {self.rows}")


def admission(threshold: int):
    """torchrec's threshold filter: the ids counted at least `threshold` times in a window."""

    def admitted(counts: torch.Tensor) -> tuple[torch.Tensor, float]:
        return counts >= threshold, float(threshold)

    return admitted


def managed_rows(spec: ManagedSpec, share: int) -> int:
    """Rows of a managed feature in `share` bytes: one per admitted id plus the shared row."""
    rows = (share - FIXED_STATE_BYTES) // (spec.embedding_dim * FLOAT_BYTES + STATE_BYTES_PER_ROW)
    if rows < 2:
        needed = 2 * (spec.embedding_dim * FLOAT_BYTES + STATE_BYTES_PER_ROW) + FIXED_STATE_BYTES
        raise ValueError(f"managed needs at least {needed} bytes for a feature (one id and the shared row)")
    return rows


class ManagedLookup(LookupModule):
    name = "managed"
    spec_type = ManagedSpec

    def __init__(self, spec: ManagedSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        cardinalities = statistics.cardinalities
        if spec.rows is not None:
            exact, self.rows = [], dict.fromkeys(self.feature_names, spec.rows)
        else:
            shares = feature_shares(cardinalities, spec.embedding_dim, spec.compression, spec.bytes, self.full_bytes)
            exact = held_exactly(cardinalities, spec.embedding_dim, shares) if spec.exact_when_fits else []
            self.rows = {
                feature: full_rows(cardinalities[feature]) if feature in exact else managed_rows(spec, shares[feature])
                for feature in self.feature_names
            }
        self.vocabularies = Vocabularies({feature: statistics.vocabulary(feature, 1) for feature in exact})
        self.collisions = nn.ModuleDict(
            {
                self.module_name(feature): self.collision_module(spec, self.rows[feature])
                for feature in self.feature_names
                if feature not in exact
            }
        )
        self.configs = [
            EmbeddingBagConfig(
                name=f"managed_{feature}",
                embedding_dim=spec.embedding_dim,
                num_embeddings=self.rows[feature],
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)
        self.windows_closed = 0

    @staticmethod
    def module_name(feature: str) -> str:
        return feature.replace(".", "_")

    @staticmethod
    def collision_module(spec: ManagedSpec, rows: int) -> MCHManagedCollisionModule:
        admitted = admission(spec.admit_count) if spec.admit_count > 1 else None
        policy = LFU_EvictionPolicy(admitted) if spec.eviction == "lfu" else LRU_EvictionPolicy(1.0, admitted)
        module = MCHManagedCollisionModule(rows, torch.device("cpu"), policy, spec.eviction_interval)
        # torchrec pads the row ranges of its own row-wise shards to 1025 int64s (8 KB a feature); this
        # state is replicated, never split, so it keeps its one range [0, rows)
        module._output_segments_tensor = module._init_output_segments_tensor = torch.tensor([0, rows])
        return module

    def index_bytes(self) -> int:
        """Exact features' vocabularies and the managed features' id -> row state."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())

    def managed_rows(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each id's own row, or the shared last row; in training the (global) batch is counted first."""
        module = self.collisions[self.module_name(feature)]
        if self.training:
            counted = global_ids(ids)
            module.profile({feature: JaggedTensor(values=counted, lengths=torch.ones_like(counted, dtype=torch.int32))})
            self.reset_evicted(feature, module.evict())
        return module.remap({feature: JaggedTensor(values=ids, lengths=lengths)})[feature].values()

    @torch.no_grad()
    def reset_evicted(self, feature: str, rows: torch.Tensor | None) -> None:
        """Zero the rows that changed owner (identically on every rank: their state is the same)."""
        if rows is None:
            return
        self.windows_closed += 1
        if rows.numel():
            rows = rows.to(torch.int64).cpu()
            write_rows(self.storage, f"managed_{feature}", rows, torch.zeros(len(rows), self.embedding_dim))

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        if feature in self.vocabularies.spans:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        return [(feature, self.managed_rows(feature, ids, lengths), lengths)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.ordered(self.storage(remap_features(features, self.remap_feature, self.feature_names)))

    def after_step(self, progress: float) -> dict[str, float]:
        """When a window has closed: the share of ownable rows (all but the shared one) that an id owns."""
        if not self.windows_closed:
            return {}
        self.windows_closed = 0
        owned = [1 - module.open_slots().item() / (module.output_size() - 1) for module in self.collisions.values()]
        return {"managed/rows_owned": float(sum(owned) / len(owned))}


def global_ids(ids: torch.Tensor) -> torch.Tensor:
    """The ids of this batch on every rank, concatenated in rank order (this rank's alone in one process)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return ids
    sizes = [torch.zeros(1, dtype=torch.int64, device=ids.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([ids.numel()], device=ids.device))
    largest = int(max(size.item() for size in sizes))
    padded = torch.zeros(largest, dtype=ids.dtype, device=ids.device)
    padded[: ids.numel()] = ids
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(gathered, sizes)])
