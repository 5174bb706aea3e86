"""The prepared cache: what `recsys data prepare` writes and everything downstream reads.

Layout of a cache directory:

    meta.json            schema, raw fields (how served rows become features), splits (row counts, in row
                         order), sources, bad-row report
    parts/part-*.parquet the prepared rows, in source order (label, dense float32, sparse int64)
    stats/<C>.parquet    id frequencies of each categorical feature over the training split

Splits are row ranges of the concatenated parts: train first, then validation, then test, so a
chronological log is split by time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recsys.data.schema import DatasetSchema
from recsys.data.stats import FREQUENCY_DIRECTORY, FeatureStatistics

SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
PARTS_DIRECTORY = "parts"
FORMAT_VERSION = 1


@dataclass
class PreparedCache:
    """A prepared dataset on disk: its schema, split row ranges and feature statistics."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | Path) -> PreparedCache:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(
                f"{path} is not a prepared cache (no {META_FILE}); create one with `recsys data prepare`"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: cache format {meta.get('format_version')} is not {FORMAT_VERSION}; prepare it again"
            )
        return cls(path=path, meta=meta)

    @property
    def fingerprint(self) -> str:
        """A hash of meta.json: changes whenever the cache is prepared again (its statistics and vocabularies too)."""
        return hashlib.sha256((self.path / META_FILE).read_bytes()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def schema(self) -> DatasetSchema:
        return DatasetSchema.from_dict(self.meta["schema"])

    def rows(self, split: str) -> int:
        self.check_split(split)
        return self.meta["splits"][split]

    def offset(self, split: str) -> int:
        self.check_split(split)
        return sum(self.meta["splits"][name] for name in SPLITS[: SPLITS.index(split)])

    def check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")

    def scan(self, split: str) -> pl.LazyFrame:
        """The rows of one split, lazily."""
        parts = sorted((self.path / PARTS_DIRECTORY).glob("part-*.parquet"))
        return pl.scan_parquet(parts).slice(self.offset(split), self.rows(split))

    def labelled_training_rows(self) -> pl.LazyFrame:
        """The train split with its label column named `label`, as statistics read it."""
        label = self.schema.label
        rows = self.scan("train")
        return rows if label == "label" else rows.rename({label: "label"})

    def statistics(self) -> FeatureStatistics:
        return FeatureStatistics(
            cardinalities=dict(self.meta["cardinalities"]),
            directory=self.path / FREQUENCY_DIRECTORY,
            training=self.labelled_training_rows,
        )
