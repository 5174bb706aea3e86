"""`robe`: every feature's vectors read in blocks from one shared array, at hashed offsets.

Desai, Chou and Shrivastava, "Random Offset Block Embedding (ROBE) for compressed embedding tables
in deep learning recommendation systems", MLSys 2022. One array of M floats serves every feature.
The vector of id x of feature f is dim / Z blocks of Z consecutive floats; block j starts at the
offset h(f, j, x). Memory is spent once for all features, so a small feature and a large one use
the same parameters, and two ids share a whole vector only if all their blocks collide:

    array (M floats, as M / Z rows of Z)    [ b0 | b1 | b2 | b3 | ... | b(M/Z - 1) ]
    C3 id 977, dim 16, Z = 4                blocks h(C3,0,977), h(C3,1,977), h(C3,2,977), h(C3,3,977)
    vector                                  [ b412 | b73 | b5 | b412 ]

Blocks start at multiples of Z: the array is one torchrec table of Z-wide rows (so it shards,
trains with fbgemm's fused optimizers and quantizes like every other table, and Z is a multiple of
4 as fbgemm's rows need). The paper's offsets may fall anywhere in a circular array, so its blocks
can overlap in part; here two blocks are the same or disjoint.

Memory: M * 4 bytes, M = rows * Z (`rows`, or the budget's bytes / 4 rounded down to whole blocks);
no index (each block's hash is a salt, derived from the seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import BudgetSpec, check_width

TABLE_NAME = "robe_array"


@dataclass(frozen=True)
class RobeSpec(BudgetSpec):
    block: int = 4
    """Z, the floats of one block: a multiple of 4 that divides embedding_dim."""
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_width("block", self.block)
        if self.embedding_dim % self.block:
            raise ValueError(f"block {self.block} must divide embedding_dim {self.embedding_dim}")

    @property
    def blocks(self) -> int:
        """Blocks per vector: dim / Z."""
        return self.embedding_dim // self.block


def array_rows(spec: RobeSpec, full_bytes: int) -> int:
    """Rows (blocks of Z floats) of the shared array: `rows`, else all the budget's bytes holds."""
    if spec.rows is not None:
        return spec.rows
    rows = budget_bytes(spec.compression, spec.bytes, full_bytes) // (spec.block * FLOAT_BYTES)
    if rows < 1:
        raise ValueError(f"the budget does not hold one block of {spec.block} floats: give a lower compression")
    return rows


class RobeLookup(LookupModule):
    name = "robe"
    spec_type = RobeSpec

    def __init__(self, spec: RobeSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.rows = array_rows(spec, self.full_bytes)
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), block) for block in range(spec.blocks)]
            for feature in self.feature_names
        }
        self.configs = [
            EmbeddingBagConfig(
                name=TABLE_NAME,
                embedding_dim=spec.block,
                num_embeddings=self.rows,
                feature_names=[name for feature in self.feature_names for name in self.block_names(feature)],
            )
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def block_names(self, feature: str) -> list[str]:
        """Names the array knows a feature's blocks by, one per block (each pooled on its own)."""
        return [f"{feature}/b{block}" for block in range(self.spec.blocks)]

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        """Each block's rows: the id hashed by that block's salt."""
        return [
            (name, hash_ids(ids, salt, self.rows), lengths)
            for name, salt in zip(self.block_names(feature), self.salts[feature])
        ]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(remap_features(features, self.remap_feature, self.feature_names)).to_dict()
        vectors = [
            torch.cat([pooled[name] for name in self.block_names(feature)], dim=1) for feature in self.feature_names
        ]
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)
