"""Raw dataset formats by name: what `recsys data prepare --format` and experiment files accept.

Every format reads its raw files into the same prepared schema (label, float32 dense, int64 ids,
or a list of ids for a bag feature such as MovieLens genres) under the same bad-row policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from recsys.data.avazu import AVAZU_FORMAT
from recsys.data.bad_rows import BadRowTally
from recsys.data.criteo import CRITEO_FORMAT
from recsys.data.frappe import FRAPPE_FORMAT
from recsys.data.movielens import layout_of, movielens_raw_fields, movielens_schema, read_movielens
from recsys.data.schema import DatasetSchema
from recsys.data.text import TextFormat

Reader = Callable[[list[Path], BadRowTally, int], Iterator[tuple[pl.DataFrame, int]]]


@dataclass(frozen=True)
class DatasetFormat:
    """A raw format: its reader, the schema it produces for given inputs, what the inputs are, and the raw
    fields a served model of it takes (see `recsys.serving.rows`)."""

    name: str
    inputs: str
    read: Reader
    schema: Callable[[list[Path]], DatasetSchema]
    raw_fields: Callable[[list[Path]], list[dict]]
    scoring: Callable[[bool], Reader]
    """The reader `recsys predict` uses: rows keep their line (`line`, where the format knows it) and,
    when not labelled, the files have no label field (Criteo's and Avazu's test files)."""


def text_format(text: TextFormat, inputs: str) -> DatasetFormat:
    return DatasetFormat(
        text.name,
        inputs,
        text.read,
        lambda _: text.schema,
        lambda _: text.raw_fields(),
        lambda labelled: scoring_format(text, labelled).read,
    )


def scoring_format(text: TextFormat, labelled: bool) -> TextFormat:
    """`text` with line numbers, and without its label field when the files carry none."""
    fields = text.fields if labelled else tuple((name, kind) for name, kind in text.fields if kind.role != "label")
    return replace(text, fields=fields, line_numbers=True)


def movielens_scoring(labelled: bool) -> Reader:
    """MovieLens scores a whole directory (its ratings joined with movies and users, ordered by time)."""
    if not labelled:
        raise ValueError("MovieLens ratings always carry their rating (the label); score them labelled")

    def read_directory(paths: list[Path], tally: BadRowTally, block_bytes: int) -> Iterator[tuple[pl.DataFrame, int]]:
        if len(paths) != 1 or not (paths[0].is_dir() or layout_of(paths).release == "100k"):
            raise ValueError(
                f"{paths[0]}: MovieLens is scored by directory (ratings with its movies file); pass the directory"
            )
        return read_movielens(paths, tally, block_bytes, lines=True)

    return read_directory


FORMATS: dict[str, DatasetFormat] = {
    "criteo": text_format(CRITEO_FORMAT, "Criteo TSV files (plain or compressed): label, I1..I13, C1..C26"),
    "avazu": text_format(AVAZU_FORMAT, "Avazu CSV files, with or without the header line"),
    "frappe": text_format(FRAPPE_FORMAT, "libFM files of Frappe's 10 fields (label 1/-1)"),
    "movielens": DatasetFormat(
        "movielens",
        "one MovieLens directory (ratings.csv + movies.csv; 1M's ratings/movies/users.dat; 100K's u.data + u.item "
        "+ u.user), or a 100K ratings file such as ua.base",
        read_movielens,
        movielens_schema,
        movielens_raw_fields,
        movielens_scoring,
    ),
}


def dataset_format(name: str) -> DatasetFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]
