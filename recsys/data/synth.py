"""Synthetic click logs in Criteo's raw format, with a planted signal that hash collisions destroy.

Why: real Criteo is 45M rows (Kaggle) to 4.2B rows (Terabyte) and may not be redistributed, so the
demo, the tests and the benchmarks need data of the same shape that anyone can make, at any scale.
Rows follow Criteo Kaggle's or Terabyte's per-feature cardinality profile (scalable, optionally
capped as MLPerf caps Terabyte's), Zipf-like value frequencies and per-feature missing rates; labels
are drawn from a hidden model

    logit = bias + sum_f w_f[v_f] + sum_{(f, g) in pairs} <u_f[v_f], u_g[v_g]> + sum_j beta_j x_j

with one effect per categorical value (so telling values apart matters: a table that merges two
values into one row cannot fit both effects) and low-rank pairwise interactions. Every number is a
pure function of (seed, feature, value), computed by hashing, so the generator needs no memory per
value and the same seed always writes the same bytes. The effects of each day's most frequent
values are tabulated once (the same numbers, looked up instead of rehashed for every row).

Days (`days` > 1) model a log that moves: each day a share `daily_churn` of every feature's ranks
passes to a value never seen before (a new id, with effects of its own), so popularity drifts and
new ids keep arriving, as continuous training meets them. Day 0 is the single-file data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from recsys.data.criteo import CRITEO
from recsys.data.fields import dense_transform

CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
"""Distinct values per categorical feature C1..C26 in the Criteo Kaggle training set."""
CRITEO_TERABYTE_CARDINALITIES = (
    227605432, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 130229467, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 292775614, 40790948, 187188510, 590152, 12973, 108, 36,
)  # fmt: skip
"""Distinct values per categorical feature C1..C26 over Criteo Terabyte's 24 days (882,774,559 in all)."""
PROFILES = {"kaggle": CRITEO_KAGGLE_CARDINALITIES, "terabyte": CRITEO_TERABYTE_CARDINALITIES}
MLPERF_CAP = 40_000_000
"""MLPerf's DLRM benchmark hashes each Terabyte feature into at most this many rows (204M rows in all)."""

GENERATOR_VERSION = 2
"""Bumped whenever the same config would write different rows, so cached synthetic data is remade."""
HEX_PAIRS = np.frombuffer(b"".join(f"{byte:02x}".encode() for byte in range(256)), dtype=np.uint16)
"""The two lowercase hex digits of each byte, as one 2-byte unit."""
INTERACTION_RANK = 4
ID_SPACE = 1 << 32
"""Ids are 8 hex digits (a bijection of values in [0, 2^32)), so no feature may have more values."""
TABLE_LIMIT = 1 << 18
"""At most this many of a feature's most frequent ranks have their effects tabulated per day."""


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `cardinality_scale` scales every feature's vocabulary: below 1 it shrinks them (small
    ones keep theirs), above 1 it grows them (up to 2^32 values each); `cap` then caps each. `rows` are per day."""

    rows: int
    cardinality_scale: float = 1.0
    seed: int = 0
    profile: str = "kaggle"
    cap: int | None = None
    days: int = 1
    first_day: int = 0
    """The first day written: a later run can continue a log (days 7, 8, ... of the same one)."""
    daily_churn: float = 0.05
    zipf_exponent: float = 1.1
    value_effect: float = 0.6
    interaction_pairs: int = 8
    interaction_effect: float = 0.5
    click_rate: float = 0.25

    def __post_init__(self) -> None:
        if self.rows <= 0:
            raise ValueError(f"rows must be positive, got {self.rows}")
        if not self.cardinality_scale > 0:
            raise ValueError(f"cardinality_scale must be positive, got {self.cardinality_scale}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if self.cap is not None and self.cap < 1:
            raise ValueError(f"cap must be at least 1 value per feature, got {self.cap}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.first_day < 0:
            raise ValueError(f"first_day must be 0 or later, got {self.first_day}")
        if not 0 <= self.daily_churn <= 1:
            raise ValueError(f"daily_churn must be in [0, 1], got {self.daily_churn}")
        self.check_id_space()
        if self.zipf_exponent <= 1:
            raise ValueError(f"zipf_exponent must be > 1, got {self.zipf_exponent}")
        if not 0 < self.click_rate < 1:
            raise ValueError(f"click_rate must be in (0, 1), got {self.click_rate}")

    def generations(self) -> int:
        """How many values one rank can hold over the days (each churn gives it a new one)."""
        return math.ceil(self.daily_churn * (self.first_day + self.days - 1)) + 1

    def check_id_space(self) -> None:
        """Every value of every day must have its own 8-hex-digit id."""
        cardinalities = self.cardinalities()
        largest = int(np.argmax(cardinalities))
        values = cardinalities[largest] * self.generations()
        if values > ID_SPACE:
            base = PROFILES[self.profile][largest]
            over_days = f" by day {self.first_day + self.days - 1}" if self.generations() > 1 else ""
            raise ValueError(
                f"cardinality_scale {self.cardinality_scale:g} gives C{largest + 1} {values:,} values{over_days}, "
                f"more than the {ID_SPACE:,} 8-hex-digit ids; use at most {ID_SPACE // (base * self.generations())}"
            )

    def cardinalities(self) -> list[int]:
        scaled = [max(min(base, 10), round(base * self.cardinality_scale)) for base in PROFILES[self.profile]]
        return scaled if self.cap is None else [min(cardinality, self.cap) for cardinality in scaled]


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of uint64 values (Steele et al., SplitMix64 finaliser)."""
    with np.errstate(over="ignore"):
        mixed = values + np.uint64(0x9E3779B97F4A7C15)
        mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return mixed ^ (mixed >> np.uint64(31))


def keyed_hash(seed: int, stream: int, feature: int, values: np.ndarray) -> np.ndarray:
    """Independent hash streams: one per (seed, purpose, feature)."""
    key = splitmix64(np.array([seed * 1_000_003 + stream * 10_007 + feature], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        return splitmix64(values.astype(np.uint64) ^ key)


def hashed_uniform(hashes: np.ndarray) -> np.ndarray:
    """Uniform floats in (0, 1) from the top 53 bits of a hash."""
    return ((hashes >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def hashed_normal(seed: int, stream: int, feature: int, values: np.ndarray) -> np.ndarray:
    """Standard normals that are a pure function of the value (Box-Muller over two hash streams)."""
    first = hashed_uniform(keyed_hash(seed, stream, feature, values))
    second = hashed_uniform(keyed_hash(seed, stream + 1, feature, values))
    return np.sqrt(-2.0 * np.log(first)) * np.cos(2.0 * math.pi * second)


def rank_to_id(ranks: np.ndarray, feature: int, seed: int) -> np.ndarray:
    """A bijection of [0, 2^32) salted per feature: distinct ranks get distinct 8-hex-digit ids."""
    with np.errstate(over="ignore"):
        ids = ranks.astype(np.uint32) ^ np.uint32((seed * 2654435761 + feature * 40503) & 0xFFFFFFFF)
        ids = ids * np.uint32(0x9E3779B1)
        ids ^= ids >> np.uint32(15)
        ids = ids * np.uint32(0x85EBCA77)
        ids ^= ids >> np.uint32(13)
    return ids


def zipf_ranks(uniforms: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Ranks in [0, cardinality) with P(rank) roughly proportional to (rank + 1)^-exponent."""
    top = (cardinality + 1.0) ** (1.0 - exponent)
    ranks = (1.0 + uniforms * (top - 1.0)) ** (1.0 / (1.0 - exponent)) - 1.0
    return np.minimum(ranks.astype(np.int64), cardinality - 1)


def hex_strings(ids: np.ndarray, missing: np.ndarray) -> pl.Series:
    """uint32 ids as 8-digit lowercase hex strings; null where missing. The digits are written straight into
    an Arrow string array (fixed offsets): building one Python bytes object per id was most of the
    generator's time."""
    digits = HEX_PAIRS[np.ascontiguousarray(ids, dtype=">u4").view(np.uint8).reshape(-1, 4)]
    offsets = np.arange(0, 8 * len(ids) + 1, 8, dtype=np.int32)
    return arrow_column(pa.string(), [offsets, digits], missing)


def integer_column(values: np.ndarray) -> pl.Series:
    """Whole floats as an Int64 column, null where NaN."""
    missing = np.isnan(values)
    return arrow_column(pa.int64(), [np.where(missing, 0.0, values).astype(np.int64)], missing)


def arrow_column(arrow_type: pa.DataType, buffers: list[np.ndarray], missing: np.ndarray) -> pl.Series:
    """A column from an Arrow array's data buffers and a missing mask (its validity bitmap), without a copy
    per value."""
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    array = pa.Array.from_buffers(
        arrow_type, len(missing), [validity, *map(pa.py_buffer, buffers)], null_count=int(missing.sum())
    )
    return pl.from_arrow(array)


class PlantedModel:
    """The hidden click model: features of a row in, click logit out."""

    def __init__(self, config: SynthConfig) -> None:
        self.config = config
        self.cardinalities = config.cardinalities()
        generator = np.random.default_rng(config.seed)
        feature_count = len(self.cardinalities)
        self.missing_rates = generator.choice([0.0, 0.0, 0.0, 0.04, 0.2, 0.44], size=feature_count)
        self.dense_missing_rates = generator.choice([0.0, 0.0, 0.2, 0.45], size=len(CRITEO.dense_features))
        self.dense_scales = generator.uniform(0.5, 4.0, size=len(CRITEO.dense_features))
        self.dense_weights = generator.normal(0.0, 0.15, size=len(CRITEO.dense_features))
        self.feature_strengths = config.value_effect * generator.uniform(0.3, 1.0, size=feature_count)
        pairs = [(first, second) for first in range(feature_count) for second in range(first + 1, feature_count)]
        chosen = generator.choice(len(pairs), size=config.interaction_pairs, replace=False)
        self.pairs = [pairs[index] for index in sorted(chosen)]
        self.paired = {feature for pair in self.pairs for feature in pair}
        self.bias = 0.0
        calibration = self.sample_features(np.random.default_rng([config.seed, 7]), 50_000)
        self.dense_center = dense_transform(calibration[0]).mean(axis=0)
        self.bias = self.calibrated_bias(calibration)

    def calibrated_bias(self, sample: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
        """The bias that gives the configured click rate on a fixed sample, found by bisection."""
        logits = self.logits(*sample)
        low, high = -20.0, 20.0
        for _ in range(60):
            middle = (low + high) / 2
            rate = np.mean(1.0 / (1.0 + np.exp(-(logits + middle))))
            low, high = (middle, high) if rate < self.config.click_rate else (low, middle)
        return (low + high) / 2

    def sample_features(self, generator: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw dense integers (NaN = missing), value ranks, and missing masks of `rows` rows."""
        dense = np.floor(generator.lognormal(0.0, 1.2, size=(rows, len(CRITEO.dense_features))) * self.dense_scales)
        dense[:, 1] -= generator.random(rows) < 0.05  # Criteo's I2 has small negative values
        dense[generator.random(dense.shape) < self.dense_missing_rates] = np.nan
        by_feature = np.empty((len(self.cardinalities), rows), dtype=np.int64)  # each feature's column contiguous
        for feature, cardinality in enumerate(self.cardinalities):
            by_feature[feature] = zipf_ranks(generator.random(rows), cardinality, self.config.zipf_exponent)
        ranks = by_feature.T
        missing = np.asfortranarray(generator.random(ranks.shape) < self.missing_rates)
        return dense, ranks, missing

    def values(self, feature: int, ranks: np.ndarray, day: int) -> np.ndarray:
        """The values at `ranks` of a feature on `day`: the rank itself on day 0; after that, each rank passes
        to a new value (rank + cardinality x generation) once in 1 / daily_churn days, at a point of its own."""
        if day == 0 or self.config.daily_churn == 0:
            return ranks
        phase = hashed_uniform(keyed_hash(self.config.seed, 90, feature, ranks))
        generation = np.floor(self.config.daily_churn * day + phase).astype(np.int64)
        return ranks + self.cardinalities[feature] * generation

    def effects(self, feature: int, keys: np.ndarray) -> np.ndarray:
        """(streams, len(keys)): the feature's strength times the value effect w_f, then the interaction vector u_f
        where the feature is paired; key -1 is the missing value, which has effects of its own."""
        interactions = [10 + component * 2 for component in range(INTERACTION_RANK)]
        streams = [0] + (interactions if feature in self.paired else [])
        effects = np.stack([hashed_normal(self.config.seed, stream, feature, keys) for stream in streams])
        effects[0] *= self.feature_strengths[feature]
        return effects

    def logits(
        self, dense: np.ndarray, ranks: np.ndarray, missing: np.ndarray, tables: EffectTables | None = None
    ) -> np.ndarray:
        """Click logits of rows of day 0, or of the day `tables` were made for (they only save hashing)."""
        tables = tables or EffectTables(self, day=0, head_rows=0)
        effects = [tables.lookup(feature, ranks[:, feature], missing[:, feature]) for feature in range(ranks.shape[1])]
        logits = np.full(len(ranks), self.bias)
        for feature_effects in effects:
            logits += feature_effects[0]
        scale = self.config.interaction_effect / math.sqrt(INTERACTION_RANK)
        product = np.empty_like(logits)
        for first, second in self.pairs:
            for component in range(1, INTERACTION_RANK + 1):
                np.multiply(scale, effects[first][component], out=product)
                product *= effects[second][component]
                logits += product
        logits += (dense_transform(dense) - self.dense_center) @ self.dense_weights
        return logits


class EffectTables:
    """The effects of one day's `head_rows` most frequent ranks of every feature, hashed once; rarer ranks are
    hashed when they occur. Zipf frequencies put most rows in the head (C3 of Kaggle: 89% in its top 2^18)."""

    def __init__(self, model: PlantedModel, day: int, head_rows: int) -> None:
        self.model = model
        self.day = day
        self.tables = []
        for feature, cardinality in enumerate(model.cardinalities):
            head = np.arange(min(cardinality, head_rows), dtype=np.int64)
            keys = np.concatenate([[-1], model.values(feature, head, day)])
            self.tables.append(model.effects(feature, keys))

    def lookup(self, feature: int, ranks: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """(streams, rows) effects of a feature's values at `ranks` (missing where `missing`)."""
        table = self.tables[feature]
        head = table.shape[1] - 1
        rows = np.where(missing, 0, ranks + 1)
        beyond = rows > head
        effects = np.take(table, np.where(beyond, 0, rows), axis=1)
        if beyond.any():
            keys = self.model.values(feature, ranks[beyond], self.day)
            effects[:, beyond] = self.model.effects(feature, keys)
        return effects


def block_frame(model: PlantedModel, tables: EffectTables, block_index: int, rows: int) -> pl.DataFrame:
    """Raw Criteo rows (string/integer columns) of one block of a day, deterministic for (seed, day, block)."""
    seed, day = model.config.seed, tables.day
    generator = np.random.default_rng([seed, 1, block_index] if day == 0 else [seed, 1, block_index, day])
    dense, ranks, missing = model.sample_features(generator, rows)
    probabilities = 1.0 / (1.0 + np.exp(-model.logits(dense, ranks, missing, tables)))
    labels = (generator.random(rows) < probabilities).astype(np.int8)
    columns = {CRITEO.label: pl.Series(labels)}
    for index, name in enumerate(CRITEO.dense_features):
        columns[name] = integer_column(dense[:, index])
    for index, name in enumerate(CRITEO.sparse_features):
        ids = rank_to_id(model.values(index, ranks[:, index], day), index, seed)
        columns[name] = hex_strings(ids, missing[:, index])
    return pl.DataFrame(columns)
