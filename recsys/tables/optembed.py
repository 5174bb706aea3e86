"""`optembed`: learn which rows to keep and how wide each field's rows are, then serve a dense compact table.

Lyu, Dong, Tang, Chen, Liu, Zhang and Wu, "OptEmbed: Learning Optimal Embedding Table for
Click-through Rate Prediction", CIKM 2022. Three stages in one training run:

1. Supernet (training up to `supernet_end`, a fraction of the steps). Every row e_i of field f
   passes a mask on its importance, its L1 norm, against a learnable per-field threshold t_f:

       e'_i = e_i * step(||e_i||_1 - t_f)          step's gradient taken as 1 (straight-through)

   and a regulariser lambda * sum_f exp(-t_f) (`threshold_decay`) pushes the thresholds up, so
   rows whose norm does not earn their place are masked. Each batch also draws every field's width
   uniformly from {4, 8, ..., embedding_dim} (drawn after each step) and zeroes the columns past it, so that one set of
   weights serves every width (weight sharing, as in one-shot architecture search).
2. Search (at the end of the first epoch past `supernet_end`). An evolutionary search over the
   fields' widths (`population`, `parents`, `generations`, `mutation_probability`,
   `crossover_share`) scores each candidate by the supernet's validation AUC. A candidate's rows
   follow from its widths and the budget: the rows the thresholds keep (||e_i||_1 > t_f), and where
   they do not fit, the same largest fraction of every field's (best margin first). Margins are not
   compared across fields: a field whose threshold fell below zero would otherwise take the whole
   budget (on Frappe the item field did, and its 7-id fields kept nothing). So the search trades
   rows against width, always within the budget.
3. Retrain. The chosen rows and widths are fixed and training goes on from the supernet's
   weights (the paper retrains from its initialisation; continuing keeps one run one training,
   and early stopping only counts epochs from here). A pruned id shares its field's
   out-of-vocabulary row with unseen ids, which keeps learning, as in `pruned`.

Widths are multiples of 4, the smallest fbgemm's tables take (the paper samples any width from 1
to d): the compact table of field f is (kept_f + 1) x w_f, and its vectors are padded with zeros to
the model's dim, which is exactly what the masked supernet computed (no projection is needed).

    training:   id --vocabulary--> row r --kept[r] ? r : oov--> T[r] (masked, columns < w_f)
    compact():  id --vocabulary of kept ids--> (kept_f + 1) x w_f table --zero padding--> d

Memory of the compact form: sum_f (kept_f + 1) * w_f * 4 bytes plus 8 bytes per kept id. The
chosen widths and kept rows per field are logged as metrics (`optembed/width/<field>`,
`optembed/kept/<field>`). A lookup compacted before any search (a run too short to reach it)
takes every field at full width and the best-margin rows the budget holds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, INDEX_BYTES, ROWWISE_ADAGRAD_STATE_BYTES, budget_bytes, full_table_bytes
from recsys.tables.full import FullLookup
from recsys.tables.interface import MemoryReport
from recsys.tables.jagged import in_order, join_parts, one_bag_per_value, sum_bags
from recsys.tables.kept_rows import KeptRowsLookup
from recsys.tables.shards import row_norms
from recsys.tables.spec import DIM_MULTIPLE, BudgetSpec
from recsys.tables.vocabulary import Vocabularies

Widths = tuple[int, ...]


@dataclass(frozen=True)
class OptEmbedSpec(BudgetSpec):
    supernet_end: float = 0.5
    """Fraction of the training steps that train the supernet; the search follows the epoch that passes it."""
    threshold_init: float = 0.0
    threshold_decay: float = 1e-4
    """lambda of the thresholds' regulariser lambda * sum_f exp(-t_f)."""
    population: int = 20
    parents: int = 10
    generations: int = 10
    mutation_probability: float = 0.1
    crossover_share: float = 0.5
    """Part of each generation's children made by crossover of two parents; the rest by mutation."""
    seed: int = 0
    min_count: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None:
            raise ValueError("optembed is sized by compression or bytes (kept rows and widths follow), not rows")
        if not 0 <= self.supernet_end < 1:
            raise ValueError(f"supernet_end must be in [0, 1), got {self.supernet_end}")
        if self.threshold_decay < 0:
            raise ValueError(f"threshold_decay must not be negative, got {self.threshold_decay}")
        if not 1 <= self.parents <= self.population:
            raise ValueError(
                f"need 1 <= parents <= population, got parents {self.parents}, population {self.population}"
            )
        if self.generations < 0:
            raise ValueError(f"generations must not be negative, got {self.generations}")
        for name in ("mutation_probability", "crossover_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")


class StraightThroughStep(torch.autograd.Function):
    """step(x) = 1 where x > 0, else 0, forward; its gradient taken as 1 (the straight-through estimator)."""

    @staticmethod
    def forward(context, margins: torch.Tensor) -> torch.Tensor:
        return (margins > 0).to(margins.dtype)

    @staticmethod
    def backward(context, gradient: torch.Tensor) -> torch.Tensor:
        return gradient


class ThresholdRegulariser(torch.autograd.Function):
    """The thresholds unchanged, forward; backward adds the gradient of lambda * sum exp(-t), so the
    regulariser acts without the training loop's loss knowing of it."""

    @staticmethod
    def forward(context, thresholds: torch.Tensor, decay: float) -> torch.Tensor:
        context.save_for_backward(thresholds)
        context.decay = decay
        return thresholds.clone()

    @staticmethod
    def backward(context, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        (thresholds,) = context.saved_tensors
        return gradient - context.decay * torch.exp(-thresholds), None


def width_choices(embedding_dim: int) -> list[int]:
    """The widths a field may take: multiples of 4 up to the model's dim."""
    return list(range(DIM_MULTIPLE, embedding_dim + 1, DIM_MULTIPLE))


def rows_within_budget(
    margins: torch.Tensor, fields: torch.Tensor, costs: torch.Tensor, spare: int, always: torch.Tensor
) -> torch.Tensor:
    """Which rows to keep: the `always` rows, and those the thresholds keep (positive margin); where
    these do not fit `spare` bytes (a row of field f costs `costs[f]`), the same largest fraction q of
    every field's, best margin first (ceil(q * kept_f) each), so no field's threshold outweighs another's."""
    candidate = (margins > 0) & ~always
    counts = torch.bincount(fields[candidate], minlength=costs.numel()).to(torch.float64)
    costs = costs.to(torch.float64)

    def kept_counts(fraction: float) -> torch.Tensor:
        return torch.ceil(fraction * counts - 1e-9)

    low, high = 0.0, 1.0
    if float((kept_counts(1.0) * costs).sum()) > spare:
        for _ in range(50):
            middle = (low + high) / 2
            low, high = (middle, high) if float((kept_counts(middle) * costs).sum()) <= spare else (low, middle)
    else:
        low = 1.0
    by_margin = torch.argsort(torch.where(candidate, margins, -torch.inf), descending=True, stable=True)
    order = by_margin[torch.argsort(fields[by_margin], stable=True)]  # field by field, best margin first
    starts = torch.searchsorted(fields[order], torch.arange(costs.numel(), device=fields.device))
    rank = torch.arange(order.numel(), device=fields.device) - starts[fields[order]]
    kept = torch.zeros(margins.numel(), dtype=torch.bool, device=margins.device)
    kept[order] = candidate[order] & (rank < kept_counts(low).to(rank.device)[fields[order]])
    return kept | always


@dataclass
class EvolutionarySearch:
    """The paper's search: keep the best `parents`, breed the next population by crossover and mutation."""

    choices: list[int]
    fields: int
    spec: OptEmbedSpec

    def run(self, fitness: Callable[[Widths], float]) -> tuple[Widths, float]:
        generator = random.Random(self.spec.seed)
        widest, narrowest = tuple([self.choices[-1]] * self.fields), tuple([self.choices[0]] * self.fields)
        population = [widest, narrowest] + [self.random(generator) for _ in range(self.spec.population - 2)]
        scores: dict[Widths, float] = {}
        for generation in range(self.spec.generations + 1):
            for candidate in population:
                if candidate not in scores:
                    scores[candidate] = fitness(candidate)
            parents = sorted(scores, key=lambda widths: -scores[widths])[: self.spec.parents]
            if generation < self.spec.generations:
                population = self.children(parents, generator)
        best = max(scores, key=lambda widths: scores[widths])
        return best, scores[best]

    def random(self, generator: random.Random) -> Widths:
        return tuple(generator.choice(self.choices) for _ in range(self.fields))

    def children(self, parents: list[Widths], generator: random.Random) -> list[Widths]:
        crossovers = round(self.spec.population * self.spec.crossover_share)
        children = []
        for index in range(self.spec.population):
            if index < crossovers and len(parents) > 1:
                first, second = generator.sample(parents, 2)
                children.append(tuple(generator.choice(pair) for pair in zip(first, second)))
            else:
                parent = generator.choice(parents)
                children.append(
                    tuple(
                        generator.choice(self.choices) if generator.random() < self.spec.mutation_probability else width
                        for width in parent
                    )
                )
        return children


class OptEmbedLookup(KeptRowsLookup):
    name = "optembed"
    spec_type = OptEmbedSpec
    compacts = True
    fills_budget = False  # widths move by 4 columns and the thresholds may keep fewer rows than fit

    def __init__(self, spec: OptEmbedSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.choices = width_choices(spec.embedding_dim)
        self.budget = budget_bytes(spec.compression, spec.bytes, self.full_bytes)
        narrowest = len(self.feature_names) * self.choices[0] * FLOAT_BYTES
        if narrowest > self.budget:
            raise ValueError(
                f"a budget of {self.budget:,} bytes cannot hold even the {len(self.feature_names)} out-of-vocabulary "
                f"rows at width {self.choices[0]} ({narrowest:,} bytes): give a larger budget"
            )
        self.register_buffer("widths", torch.full((len(self.feature_names),), spec.embedding_dim, dtype=torch.int64))
        self.register_buffer("searched", torch.zeros((), dtype=torch.bool))
        self.register_buffer("drawn", self.widths.clone(), persistent=False)
        """The supernet's widths for the next training batch (full before the first step)."""
        sizes = torch.tensor([self.vocabularies.size(feature) + 1 for feature in self.feature_names])
        self.register_buffer("row_feature", torch.repeat_interleave(torch.arange(len(sizes)), sizes))
        self.threshold = nn.Parameter(torch.full((len(self.feature_names),), spec.threshold_init))
        self.sampler = torch.Generator().manual_seed(spec.seed)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        parts = [
            (feature, self.kept_rows(feature, ids), lengths)
            for feature, ids, lengths in in_order(features, self.feature_names)
        ]
        fields, dim = len(self.feature_names), self.embedding_dim
        if bool(self.searched):
            pooled = self.storage(join_parts(parts, features.stride()))
            vectors = self.ordered(pooled).values().view(-1, fields, dim)
            if self.training:  # DMP's DDP has a static graph: the thresholds stay in it, weighing nothing
                vectors = vectors + 0.0 * self.threshold.sum()
        else:
            vectors = self.supernet_vectors(parts, features.stride())
        widths = self.drawn if self.training and not bool(self.searched) else self.widths
        columns = torch.arange(dim, device=vectors.device) < widths.to(vectors.device)[:, None]
        return KeyedTensor(
            keys=self.feature_names,
            length_per_key=[dim] * fields,
            values=(vectors * columns).reshape(-1, fields * dim),
        )

    def supernet_vectors(self, parts, stride: int) -> torch.Tensor:
        """[rows, fields, dim] pooled vectors of rows masked by their importance (straight-through)."""
        thresholds = self.threshold
        if self.training and self.threshold.requires_grad:
            thresholds = ThresholdRegulariser.apply(self.threshold, self.spec.threshold_decay)
        if all(bool(lengths.eq(1).all()) for _, _, lengths in parts):  # one id per bag: the pooled vector is its row
            rows = self.ordered(self.storage(join_parts(parts, stride))).values().view(stride, len(parts), -1)
            return rows * StraightThroughStep.apply(rows.abs().sum(dim=2) - thresholds)[:, :, None]
        per_value = self.storage(one_bag_per_value(parts)).to_dict()
        vectors = []
        for index, (feature, rows, lengths) in enumerate(parts):
            values = per_value[feature][: rows.numel()]
            mask = StraightThroughStep.apply(values.abs().sum(dim=1) - thresholds[index])
            vectors.append(sum_bags(values * mask[:, None], lengths))
        return torch.stack(vectors, dim=1)

    def after_step(self, progress: float) -> dict[str, float]:
        """Draw every field's width for the next batch, uniformly from the choices (the same on every rank)."""
        if not bool(self.searched):
            picks = torch.randint(len(self.choices), (len(self.feature_names),), generator=self.sampler)
            self.drawn.copy_(torch.tensor(self.choices)[picks])
        return {}

    def settled(self, progress: float) -> bool:
        return bool(self.searched)

    def after_epoch(self, progress: float, validation_auc: Callable[[], float]) -> dict[str, float]:
        """Search the widths once the supernet has trained (see the module docstring); log the choice."""
        if bool(self.searched) or progress < self.spec.supernet_end:
            return {}
        margins = self.margins()

        def fitness(widths: Widths) -> float:
            self.fix(widths, margins)
            return validation_auc()

        search = EvolutionarySearch(self.choices, len(self.feature_names), self.spec)
        best, auc = search.run(fitness)
        self.fix(best, margins)
        return self.architecture_metrics() | {"optembed/search_val_auc": auc}

    @torch.no_grad()
    def margins(self) -> torch.Tensor:
        """||e_i||_1 - t_f of every row, rows of all features end to end."""
        starts = {table: self.row_starts[feature] for table, feature in self.table_features.items()}
        norms = row_norms(self.storage, starts, self.kept.numel(), self.kept.device)
        return norms - self.threshold.detach().to(norms.device)[self.row_feature]

    @torch.no_grad()
    def planned_rows(self, widths: Widths, margins: torch.Tensor) -> torch.Tensor:
        """The rows kept at `widths`: those the thresholds keep, cut to the budget at those widths."""
        costs = torch.tensor(widths, device=margins.device) * FLOAT_BYTES + INDEX_BYTES
        always = torch.zeros_like(self.kept)
        always[self.oov_rows] = True  # out-of-vocabulary rows are paid for apart and have no index entry
        return rows_within_budget(margins, self.row_feature, costs, self.budget - sum(widths) * FLOAT_BYTES, always)

    @torch.no_grad()
    def fix(self, widths: Widths, margins: torch.Tensor) -> None:
        """Take `widths` and the rows kept at them as the architecture."""
        self.kept.copy_(self.planned_rows(widths, margins))
        self.widths.copy_(torch.tensor(widths))
        self.searched.fill_(True)

    def kept_per_feature(self, kept: torch.Tensor | None = None) -> dict[str, int]:
        kept = self.kept if kept is None else kept
        return {
            feature: int(kept[start : start + self.vocabularies.size(feature)].sum())
            for feature, start in self.row_starts.items()
        }

    def architecture_metrics(self) -> dict[str, float]:
        """Chosen width and kept ids per field, and the kept ids in all."""
        kept = self.kept_per_feature()
        total = sum(self.vocabularies.size(feature) for feature in self.feature_names)
        return (
            {f"optembed/width/{feature}": float(width) for feature, width in zip(self.feature_names, self.widths)}
            | {f"optembed/kept/{feature}": float(count) for feature, count in kept.items()}
            | {"optembed/kept_ids": float(sum(kept.values())), "optembed/kept_fraction": sum(kept.values()) / total}
        )

    def default_widths(self) -> Widths:
        """The widths a compaction without search takes: every field at full width."""
        return tuple([self.embedding_dim] * len(self.feature_names))

    def memory_report(self) -> MemoryReport:
        """The compact form's bytes: of the searched architecture, else of the one `compact` would take now."""
        if bool(self.searched):
            widths, kept = tuple(self.widths.tolist()), self.kept
        else:
            widths = self.default_widths()
            kept = self.planned_rows(widths, self.margins())
        counts = self.kept_per_feature(kept)
        parameters = sum((counts[feature] + 1) * width for feature, width in zip(self.feature_names, widths))
        return MemoryReport(
            parameter_bytes=parameters * FLOAT_BYTES,
            index_bytes=sum(counts.values()) * INDEX_BYTES,
            optimizer_bytes=self.kept.numel() * ROWWISE_ADAGRAD_STATE_BYTES,
            full_bytes=self.full_bytes,
        )

    @torch.no_grad()
    def compact(self) -> CompactOptEmbedLookup:
        """Only the kept rows and each field's chosen columns, as dense tables (without a search so far:
        full widths and the rows the budget holds, fixed in this lookup too)."""
        if not bool(self.searched):
            self.fix(self.default_widths(), self.margins())
        widths = dict(zip(self.feature_names, self.widths.tolist()))
        vocabularies, tables = self.kept_tables(widths)
        return CompactOptEmbedLookup(self.spec, list(self.feature_names), self.full_bytes, vocabularies, widths, tables)

    @classmethod
    def serving_form(
        cls, spec: OptEmbedSpec, statistics: FeatureStatistics, shape: dict[str, int] | None
    ) -> CompactOptEmbedLookup:
        if shape is None:
            raise ValueError("the serving form of optembed tables needs kept rows and widths per feature (its shape)")
        return CompactOptEmbedLookup.of_shape(spec, statistics, shape)


class CompactOptEmbedLookup(FullLookup):
    """The serving form of `OptEmbedLookup`: per field, a table of its kept ids at its width, padded with zeros."""

    name = "optembed"
    spec_type = OptEmbedSpec

    def __init__(
        self,
        spec: OptEmbedSpec,
        feature_names: list[str],
        full_bytes: int,
        vocabularies: dict[str, np.ndarray],
        widths: dict[str, int],
        tables: dict[str, torch.Tensor] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.describe(spec, feature_names, full_bytes)
        self.vocabularies = Vocabularies(vocabularies, persistent=True)
        self.widths = dict(widths)
        self.configs = [
            EmbeddingBagConfig(
                name=f"{self.name}_{feature}",
                embedding_dim=self.widths[feature],
                num_embeddings=self.vocabularies.size(feature) + 1,
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)
        if tables is not None:
            with torch.no_grad():
                for config in self.configs:
                    self.storage.embedding_bags[config.name].weight.copy_(tables[config.feature_names[0]])

    @classmethod
    def of_shape(
        cls, spec: OptEmbedSpec, statistics: FeatureStatistics, shape: dict[str, int]
    ) -> CompactOptEmbedLookup:
        """An empty compact form of `shape` (`<feature>/kept`, `<feature>/width`), to load a saved state into."""
        features = list(statistics.features)
        placeholders = {feature: np.arange(shape[f"{feature}/kept"], dtype=np.int64) for feature in features}
        widths = {feature: shape[f"{feature}/width"] for feature in features}
        full = full_table_bytes(statistics.cardinalities, spec.embedding_dim)
        return cls(spec, features, full, placeholders, widths)

    def serving_shape(self) -> dict[str, int]:
        shape = {f"{feature}/kept": self.vocabularies.size(feature) for feature in self.feature_names}
        return shape | {f"{feature}/width": width for feature, width in self.widths.items()}

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(self.remap(features)).to_dict()
        vectors = [
            nn.functional.pad(pooled[feature], (0, self.embedding_dim - self.widths[feature]))
            for feature in self.feature_names
        ]
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)
