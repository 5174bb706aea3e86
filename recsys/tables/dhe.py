"""`dhe`: no table at all; each id's vector is decoded from a dense code of k hashes by an MLP.

Kang, Cheng, Yao, Chen, Hong, Chi, Hong and Cheng, "Learning to Embed Categorical Features without
Embedding Tables for Recommendation" (Deep Hash Embedding), KDD 2021. An id is encoded by k
independent hash functions into k buckets of m, each bucket scaled to [-1, 1] (the paper's uniform
encoding), and a feed-forward network decodes the code into the embedding:

    C3 id 977, k = 4, m = 10^6:   buckets [412_001, 73_517, 5_230, 999_999]
    code                          [-0.176, -0.853, -0.990, 1.0]
    vector                        decoder(code): Linear(k, w) -> [LayerNorm -> Mish -> Linear(w, w)] ...
                                  -> LayerNorm -> Mish -> Linear(w, dim)

Ids share nothing but the decoder's weights, so there are no collisions to speak of (two ids
collide only if all k buckets do) and memory does not grow with the vocabulary. One decoder
serves every feature (the hashes are salted by feature), so the whole budget buys one wider
network and a batch is decoded in one chain of matrix products. The paper normalises with batch
normalisation; here layer normalisation does it, so an id's vector never depends on the rest of
its batch and serving gives what training measured.

Memory: the decoder's parameters only, k w + (layers - 1) w^2 + w dim floats plus biases and norms;
w is the widest the budget holds, at most `max_width` (so large budgets are not filled: see
`fills_budget`). No index. Compute: about k w + (layers - 1) w^2 + w dim multiply-adds per id
(k = 64, w = 256, 2 layers, dim 16: 86k per id, against one row read for a table), so dhe trades
memory for arithmetic: pick it where memory is scarcest and compute is cheap (a GPU).

Parallelism: the decoder is dense, so under DistributedModelParallel it is replicated on every
rank and its gradients are all-reduced (data parallel), trained by the dense optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes
from recsys.tables.hashes import NON_NEGATIVE, derive_salt, feature_key, mix64
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import in_order, sum_bags
from recsys.tables.spec import BudgetSpec

DEFAULT_VECTOR_STD = 0.01
"""Without `init_std`, the decoder starts so that its vectors have about this spread."""
PROBE_IDS = 4096
"""Ids whose decoded vectors set the initial spread (the same ids every time: reproducible)."""


@dataclass(frozen=True)
class DHESpec(BudgetSpec):
    hashes: int = 64
    """k, the hash functions of the code (the decoder's input width)."""
    buckets: int = 1_000_000
    """m, the buckets of each hash before they are scaled to [-1, 1]."""
    layers: int = 2
    """Hidden layers of the decoder."""
    max_width: int = 256
    """The widest hidden layer the budget may buy (compute per id grows with its square)."""
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None:
            raise ValueError("dhe has no table rows: give its budget as compression or bytes")
        for name in ("hashes", "layers", "max_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.buckets < 2:
            raise ValueError(f"buckets must be at least 2, got {self.buckets}")


def decoder_floats(spec: DHESpec, width: int) -> int:
    """Parameters of a decoder with hidden width `width`: linear layers with biases, a norm per hidden layer."""
    linear = (spec.hashes + 1) * width + (spec.layers - 1) * (width + 1) * width + (width + 1) * spec.embedding_dim
    norms = 2 * width * spec.layers
    return linear + norms


def decoder_width(spec: DHESpec, full_bytes: int) -> int:
    """The widest decoder (at most `max_width`) within the budget."""
    budget = budget_bytes(spec.compression, spec.bytes, full_bytes)
    fitting = [width for width in range(1, spec.max_width + 1) if decoder_floats(spec, width) * FLOAT_BYTES <= budget]
    if not fitting:
        needed = decoder_floats(spec, 1) * FLOAT_BYTES
        raise ValueError(f"dhe needs at least {needed} bytes for a decoder of width 1; the budget holds {budget}")
    return fitting[-1]


def decoder(spec: DHESpec, width: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(spec.hashes, width)]
    for _ in range(spec.layers - 1):
        layers += [nn.LayerNorm(width), nn.Mish(), nn.Linear(width, width)]
    layers += [nn.LayerNorm(width), nn.Mish(), nn.Linear(width, spec.embedding_dim)]
    return nn.Sequential(*layers)


class DHELookup(LookupModule):
    name = "dhe"
    spec_type = DHESpec
    fills_budget = False

    def __init__(self, spec: DHESpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.width = decoder_width(spec, self.full_bytes)
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), function) for function in range(spec.hashes)]
            for feature in self.feature_names
        }
        self.configs = []
        self.storage = decoder(spec, self.width)
        self.initialize_tables(DEFAULT_VECTOR_STD)

    def code(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """[n, k] dense codes: each hash's bucket scaled to [-1, 1]."""
        salts = torch.tensor(self.salts[feature], dtype=torch.int64, device=ids.device)
        buckets = (mix64(ids.unsqueeze(1) ^ salts) & NON_NEGATIVE) % self.spec.buckets
        return buckets.to(torch.float32) * (2.0 / (self.spec.buckets - 1)) - 1.0

    @torch.no_grad()
    def initialize_tables(self, std: float) -> None:
        """Fresh decoder weights, the last layer scaled so that vectors of probe ids have spread `std`."""
        for module in self.storage.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
        last = self.storage[-1]
        probe = self.storage(self.code(self.feature_names[0], torch.arange(PROBE_IDS)))
        last.weight.mul_(std / probe.std())
        last.bias.zero_()

    def extra_parameter_bytes(self) -> int:
        return sum(parameter.numel() * FLOAT_BYTES for parameter in self.storage.parameters())

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Decode each feature's distinct ids once (a batch repeats popular ids), then pool the bags."""
        parts = in_order(features, self.feature_names)
        distinct = [torch.unique(ids, return_inverse=True) for _, ids, _ in parts]
        codes = torch.cat([self.code(feature, ids) for (feature, _, _), (ids, _) in zip(parts, distinct)])
        decoded = self.storage(codes).split([ids.numel() for ids, _ in distinct])
        pooled = [
            sum_bags(vectors[positions], lengths)
            for vectors, (_, positions), (_, _, lengths) in zip(decoded, distinct, parts)
        ]
        return KeyedTensor.from_tensor_list(self.feature_names, pooled)
