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
from recsys.data.text import TextFormat

CRITEO_FORMAT = TextFormat(
    name="criteo",
    title="Criteo TSV",
    separator="\t",
    fields=(
        ("label", Label()),
        *((f"I{index}", Count()) for index in range(1, 14)),
        *((f"C{index}", Hex()) for index in range(1, 27)),
    ),
)
CRITEO = CRITEO_FORMAT.schema
"""label, I1..I13 (dense), C1..C26 (sparse): derived from the fields."""


def read_criteo(
    paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Yield (prepared block, raw bytes it came from) over all files in order."""
    return CRITEO_FORMAT.read(paths, tally, block_bytes)
