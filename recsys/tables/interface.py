"""The one lookup interface every strategy implements.

A lookup module maps a KeyedJaggedTensor of raw integer ids (any int64, negative and unseen
included) to a KeyedTensor of pooled vectors, one `embedding_dim` vector per feature and row:

    ids (KJT)  --remap in front (hash, vocabulary, ...)-->  storage rows (KJT)
               --torchrec EmbeddingBagCollection `storage`-->  pooled KeyedTensor

Storage is torchrec `EmbeddingBagCollection`s in the attribute `storage`, so
DistributedModelParallel shards it, fbgemm's fused optimizers train it and torchrec's quantized
modules serve it, unchanged for every strategy. The one exception is `dhe`, which has no table:
its `storage` is a dense decoder, replicated by DMP and trained by the dense optimizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, ROWWISE_ADAGRAD_STATE_BYTES, full_table_bytes
from recsys.tables.spec import TableSpec
from recsys.tables.vocabulary import Vocabularies


@dataclass(frozen=True)
class MemoryReport:
    """Bytes a lookup module needs, against the full table it replaces.

    `total_bytes` is what serving needs (parameters and index structures); optimizer state is
    training-only and reported apart. `compression` = full-table parameter bytes / `total_bytes`.
    """

    parameter_bytes: int
    index_bytes: int
    optimizer_bytes: int
    full_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.index_bytes

    @property
    def compression(self) -> float:
        return self.full_bytes / self.total_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "compression": self.compression}

    def summary(self) -> str:
        """The one way a size is said (train summary, export): total, its parts, and the compression ratio."""
        return (
            f"{self.total_bytes:,} bytes (parameters {self.parameter_bytes:,} + index {self.index_bytes:,}); "
            f"compression {self.compression:.2f}x against the full table's {self.full_bytes:,} bytes"
        )


class LookupModule(nn.Module, ABC):
    """Base of every strategy: `forward`, `memory_report` and `spec`; storage in `self.storage`."""

    name: ClassVar[str]
    spec_type: ClassVar[type[TableSpec]]
    fills_budget: ClassVar[bool] = True
    """Whether sizing uses (nearly) all of a budget; False where sizes move in coarse steps."""
    compacts: ClassVar[bool] = False
    """Whether `compact()` builds a different serving form (then training evaluates that form too)."""

    def __init__(self, spec: TableSpec, statistics: FeatureStatistics) -> None:
        super().__init__()
        self.describe(spec, list(statistics.features), full_table_bytes(statistics.cardinalities, spec.embedding_dim))

    def describe(self, spec: TableSpec, feature_names: list[str], full_bytes: int) -> None:
        """Set what every lookup tells its users: spec, feature names, output dim, full-table bytes."""
        self.spec = spec
        self.feature_names = feature_names
        self.embedding_dim = spec.embedding_dim
        self.full_bytes = full_bytes

    @abstractmethod
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled `embedding_dim` vectors per feature of `self.feature_names`."""

    def ordered(self, pooled: KeyedTensor) -> KeyedTensor:
        """`pooled` with its keys in `feature_names` order.

        A sharded EmbeddingBagCollection returns features in the order of the ranks holding them,
        and models read the vectors by position.
        """
        if pooled.keys() == self.feature_names:
            return pooled
        vectors = pooled.to_dict()
        return KeyedTensor.from_tensor_list(self.feature_names, [vectors[feature] for feature in self.feature_names])

    @torch.no_grad()
    def initialize_tables(self, std: float) -> None:
        """Draw every storage row from normal(0, std) (a spec's `init_std`); strategies with
        tables that must start elsewhere (qr's multiplicative factors) override this."""
        for weight in self.storage.parameters():
            weight.normal_(0.0, std)

    def after_step(self, progress: float) -> dict[str, float]:
        """Called by training after every optimizer step with the fraction of training done, in (0, 1].

        Strategies that change during training (pruning schedules) act here; metrics they return
        are logged. Nothing happens by default.
        """
        return {}

    def after_epoch(self, progress: float, validation_auc: Callable[[], float]) -> dict[str, float]:
        """Called by training after each epoch's validation, with a function that measures the model's
        validation AUC as the lookup stands when it is called.

        An architecture search (optembed's) varies the lookup and scores each candidate here, then
        leaves it in its chosen form; metrics it returns are logged. Nothing happens by default.
        """
        return {}

    def settled(self, progress: float) -> bool:
        """Whether the lookup has its final form at `progress` (a pruning schedule has ended).

        Early stopping compares only epochs where it has, so it never keeps a half-pruned model.
        """
        return True

    def compact(self) -> LookupModule:
        """The serving form: a lookup that gives the same vectors with the least memory.

        Every strategy but `pruned` is already compact. `memory_report()` describes this form.
        """
        return self

    def serving_shape(self) -> dict[str, int] | None:
        """What, besides spec and statistics, rebuilding this (serving) form needs before its state loads.

        None for every form that the strategy's constructor builds from the statistics; a compact
        form that is not (pruned's kept ids) gives its sizes, and `serving_form` takes them back.
        """
        return None

    @classmethod
    def serving_form(cls, spec: TableSpec, statistics: FeatureStatistics, shape: dict[str, int] | None) -> LookupModule:
        """An empty serving form of this strategy to load a saved serving state into (see `serving_shape`)."""
        return cls(spec, statistics)

    def table_configs(self) -> list[EmbeddingBagConfig]:
        """The torchrec tables of `storage` (what sharding plans and memory reports are made of).

        Every strategy keeps them in `self.configs`, the list it built `storage` from.
        """
        return self.configs

    def index_bytes(self) -> int:
        """Bytes of remapping structures kept besides the tables: every `Vocabularies` of the strategy."""
        return sum(module.bytes() for module in self.modules() if isinstance(module, Vocabularies))

    def extra_parameter_bytes(self) -> int:
        """Bytes of trainable parameters outside the tables (projections, thresholds)."""
        return sum(
            parameter.numel() * FLOAT_BYTES
            for name, child in self.named_children()
            if name != "storage"
            for parameter in child.parameters()
        )

    def memory_report(self) -> MemoryReport:
        configs = self.table_configs()
        return MemoryReport(
            parameter_bytes=sum(config.num_embeddings * config.embedding_dim * FLOAT_BYTES for config in configs)
            + self.extra_parameter_bytes(),
            index_bytes=self.index_bytes(),
            optimizer_bytes=sum(config.num_embeddings * ROWWISE_ADAGRAD_STATE_BYTES for config in configs),
            full_bytes=self.full_bytes,
        )


def lookup_path(model: nn.Module) -> str:
    """The attribute path of the model's lookup module (every model has exactly one)."""
    paths = [name for name, module in model.named_modules() if isinstance(module, LookupModule)]
    if len(paths) != 1:
        raise ValueError(f"expected one lookup module in the model, found {len(paths)}: {paths}")
    return paths[0]


def lookup_of(model: nn.Module) -> LookupModule:
    """The model's lookup module, wherever wrapping (DMP) put it."""
    return model.get_submodule(lookup_path(model))


def replace_lookup(model: nn.Module, lookup: LookupModule) -> None:
    """Put `lookup` where the model's lookup module is (its compact or quantized form)."""
    parent, _, attribute = lookup_path(model).rpartition(".")
    setattr(model.get_submodule(parent), attribute, lookup)
