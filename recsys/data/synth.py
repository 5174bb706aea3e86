"""Synthetic click logs in Criteo's raw format, with a planted signal that hash collisions destroy.

Why: real Criteo is 45M rows and may not be redistributed, so the demo, the tests and the
benchmarks need data of the same shape that anyone can make. Rows follow Criteo Kaggle's
per-feature cardinality profile (scalable), Zipf-like value frequencies and per-feature missing
rates; labels are drawn from a hidden model

    logit = bias + sum_f w_f[v_f] + sum_{(f, g) in pairs} <u_f[v_f], u_g[v_g]> + sum_j beta_j x_j

with one effect per categorical value (so telling values apart matters: a table that merges two
values into one row cannot fit both effects) and low-rank pairwise interactions. Every number is a
pure function of (seed, feature, value rank), computed by hashing, so the generator needs no memory
per value and the same seed always writes the same bytes.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.criteo import CRITEO
from recsys.data.fields import dense_transform

CRITEO_KAGGLE_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
"""Distinct values per categorical feature C1..C26 in the Criteo Kaggle training set."""

GENERATOR_VERSION = 2
"""Bumped whenever the same config would write different rows, so cached synthetic data is remade."""
HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
INTERACTION_RANK = 4
ID_SPACE = 1 << 32
"""Ids are 8 hex digits (a bijection of ranks in [0, 2^32)), so no feature may have more values."""


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. `cardinality_scale` scales every feature's vocabulary: below 1 it shrinks them (small
    ones keep theirs), above 1 it grows them towards Terabyte-size vocabularies (up to 2^32 values each)."""

    rows: int
    cardinality_scale: float = 1.0
    seed: int = 0
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
        largest = max(CRITEO_KAGGLE_CARDINALITIES)
        if round(largest * self.cardinality_scale) > ID_SPACE:
            raise ValueError(
                f"cardinality_scale {self.cardinality_scale:g} gives C3 {round(largest * self.cardinality_scale):,} "
                f"values, more than the {ID_SPACE:,} 8-hex-digit ids; use at most {ID_SPACE // largest}"
            )
        if self.zipf_exponent <= 1:
            raise ValueError(f"zipf_exponent must be > 1, got {self.zipf_exponent}")
        if not 0 < self.click_rate < 1:
            raise ValueError(f"click_rate must be in (0, 1), got {self.click_rate}")

    def cardinalities(self) -> list[int]:
        return [
            max(min(cardinality, 10), round(cardinality * self.cardinality_scale))
            for cardinality in CRITEO_KAGGLE_CARDINALITIES
        ]


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
    """uint32 ids as 8-digit lowercase hex strings; null where missing."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    digits = HEX_DIGITS[(ids[:, None] >> shifts) & np.uint32(15)]
    series = pl.Series(np.ascontiguousarray(digits).view("S8").ravel()).cast(pl.String)
    return series.scatter(np.flatnonzero(missing), None) if missing.any() else series


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
        ranks = np.stack(
            [
                zipf_ranks(generator.random(rows), cardinality, self.config.zipf_exponent)
                for cardinality in self.cardinalities
            ],
            axis=1,
        )
        missing = generator.random(ranks.shape) < self.missing_rates
        return dense, ranks, missing

    def logits(self, dense: np.ndarray, ranks: np.ndarray, missing: np.ndarray) -> np.ndarray:
        seed = self.config.seed
        keys = np.where(missing, -1, ranks)  # a missing value has an effect of its own
        logits = np.full(len(ranks), self.bias)
        for feature, strength in enumerate(self.feature_strengths):
            logits += strength * hashed_normal(seed, 0, feature, keys[:, feature])
        scale = self.config.interaction_effect / math.sqrt(INTERACTION_RANK)
        for first, second in self.pairs:
            for component in range(INTERACTION_RANK):
                left = hashed_normal(seed, 10 + component * 2, first, keys[:, first])
                right = hashed_normal(seed, 10 + component * 2, second, keys[:, second])
                logits += scale * left * right
        logits += (dense_transform(dense) - self.dense_center) @ self.dense_weights
        return logits


def generate_blocks(config: SynthConfig, block_rows: int = 200_000) -> Iterator[pl.DataFrame]:
    """Yield raw Criteo rows (as string/integer columns) in blocks, deterministic for a seed."""
    model = PlantedModel(config)
    for block_index, start in enumerate(range(0, config.rows, block_rows)):
        rows = min(block_rows, config.rows - start)
        generator = np.random.default_rng([config.seed, 1, block_index])
        dense, ranks, missing = model.sample_features(generator, rows)
        probabilities = 1.0 / (1.0 + np.exp(-model.logits(dense, ranks, missing)))
        labels = (generator.random(rows) < probabilities).astype(np.int8)
        columns = {CRITEO.label: pl.Series(labels)}
        for index, name in enumerate(CRITEO.dense_features):
            columns[name] = pl.Series(dense[:, index]).fill_nan(None).cast(pl.Int64)
        for index, name in enumerate(CRITEO.sparse_features):
            ids = rank_to_id(ranks[:, index], index, config.seed)
            columns[name] = hex_strings(ids, missing[:, index])
        yield pl.DataFrame(columns)


def write_synthetic(config: SynthConfig, output: Path, on_rows: Callable[[int], None] | None = None) -> None:
    """Write `config.rows` rows to `output` (gzip if it ends in .gz), atomically."""
    partial = output.with_name(output.name + ".partial")
    opener = gzip.open if output.suffix == ".gz" else open
    try:
        with opener(partial, "wb") as stream:
            for block in generate_blocks(config):
                block.write_csv(stream, separator="\t", include_header=False, quote_style="never", null_value="")
                if on_rows is not None:
                    on_rows(len(block))
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
