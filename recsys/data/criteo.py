"""Criteo Kaggle / Terabyte click logs: the raw format and its reader.

Raw format: one row per line, 40 tab-separated fields, no header, no quoting:

    label \t I1 .. I13 \t C1 .. C26
    0 or 1   integers     8-digit hex strings; an empty field is a missing value

Prepared as: label 0.0/1.0, I -> log(1 + max(x, 0)) (missing 0), C -> int(hex, 16) (missing MISSING_ID).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from recsys.data.bad_rows import BadRowTally
from recsys.data.fields import Count, Hex, Label
from recsys.data.schema import CRITEO
from recsys.data.text import TextFormat

CRITEO_FORMAT = TextFormat(
    name="criteo",
    title="Criteo TSV",
    separator="\t",
    fields=(
        (CRITEO.label, Label()),
        *((name, Count()) for name in CRITEO.dense_features),
        *((name, Hex()) for name in CRITEO.sparse_features),
    ),
)


def read_criteo(
    paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Yield (prepared block, raw bytes it came from) over all files in order."""
    return CRITEO_FORMAT.read(paths, tally, block_bytes)
