"""Reader of Criteo Kaggle / Terabyte click logs into prepared columns, streaming and validating.

Raw format: one row per line, 40 tab-separated fields, no header, no quoting:

    label \t I1 .. I13 \t C1 .. C26
    0       integers     8-digit hex strings; an empty field is a missing value

Files are read in blocks of whole lines (plain or gzip), so memory stays bounded whatever the file
size, and each block is parsed by polars. Every value is checked: a row with the wrong number of
fields, a label other than 0/1, a non-integer I or a non-hex C is reported with its file and line
(see `bad_rows`). Most blocks are clean, so each is first parsed the fast way (integers typed
by polars, one tab count for the whole block); only a block where that finds a problem is parsed
again line by line and value by value, to say exactly which row is wrong and why.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.bad_rows import BadRowTally
from recsys.data.schema import CRITEO, MISSING_ID

FIELDS = len(CRITEO.columns)
MAX_HEX_DIGITS = 8
MAX_LINE_BYTES = 1 << 20
"""A Criteo line is about 250 bytes; a megabyte without a line end means the file is something else."""
RAW_SCHEMA = {name: pl.String for name in CRITEO.columns}
TYPED_SCHEMA = {
    **{name: pl.Int64 for name in (CRITEO.label, *CRITEO.dense_features)},
    **{name: pl.String for name in CRITEO.sparse_features},
}


def open_raw(path: Path) -> io.BufferedIOBase:
    """Open a raw file for binary reading, decompressing `.gz` on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def line_blocks(path: Path, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield (block of whole lines ending in a newline, 1-based number of its first line)."""
    next_line = 1
    remainder = b""
    try:
        with open_raw(path) as stream:
            while data := stream.read(block_bytes):
                data = remainder + data
                cut = data.rfind(b"\n") + 1
                remainder = data[cut:]
                if len(remainder) > MAX_LINE_BYTES:
                    line = next_line + data.count(b"\n", 0, cut)
                    raise ValueError(
                        f"{path}:{line}: no line end in {MAX_LINE_BYTES:,} bytes; is this a Criteo text file?"
                    )
                if cut:
                    yield data[:cut], next_line
                    next_line += data.count(b"\n", 0, cut)
    except (OSError, EOFError) as error:  # unreadable, or a corrupt or truncated gzip stream
        raise ValueError(f"{path}: cannot read past line {next_line - 1}: {error}") from error
    if remainder:
        yield remainder + b"\n", next_line


def read_criteo(
    paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Yield (prepared block, raw bytes it came from) over all files in order."""
    for path in paths:
        for block, first_line in line_blocks(path, block_bytes):
            yield parse_block(block, first_line, str(path), tally), len(block)


def parse_block(block: bytes, first_line: int, path: str, tally: BadRowTally) -> pl.DataFrame:
    """Turn one block of raw lines into prepared columns, reporting malformed rows to `tally`."""
    line_count = block.count(b"\n")
    if block.count(b"\t") == (FIELDS - 1) * line_count:
        prepared = parse_clean_block(block)
        if prepared is not None:
            return prepared
    return parse_checked_block(block, first_line, path, tally)


def parse_clean_block(block: bytes) -> pl.DataFrame | None:
    """The fast path: typed parsing; None if anything is off (the checked path then finds what)."""
    try:
        typed = pl.read_csv(
            block, separator="\t", has_header=False, schema=TYPED_SCHEMA, quote_char=None, truncate_ragged_lines=False
        )
    except pl.exceptions.PolarsError:
        return None
    parsed = pl.concat(
        [typed.select(CRITEO.label, *CRITEO.dense_features), typed.select(hex_expressions())], how="horizontal"
    )
    if problem_masks(typed, parsed).select(pl.any_horizontal(pl.all()).any()).item():
        return None
    return parsed.select(prepared_expressions())


def parse_checked_block(block: bytes, first_line: int, path: str, tally: BadRowTally) -> pl.DataFrame:
    """The careful path: every line and value checked, problems reported with their line."""
    block, line_numbers = drop_ragged_lines(block, first_line, path, tally)
    raw = read_fields(block)
    return convert(raw, line_numbers, path, tally)


def read_fields(block: bytes) -> pl.DataFrame:
    """Every field of a block of 40-field lines as a string (null where empty)."""
    if not block:
        return pl.DataFrame(schema=RAW_SCHEMA)
    return pl.read_csv(
        io.BytesIO(block),
        separator="\t",
        has_header=False,
        schema=RAW_SCHEMA,
        quote_char=None,
        truncate_ragged_lines=False,
    )


def drop_ragged_lines(block: bytes, first_line: int, path: str, tally: BadRowTally) -> tuple[bytes, np.ndarray]:
    """Report lines without exactly 40 fields; return the remaining lines and their numbers."""
    array = np.frombuffer(block, dtype=np.uint8)
    line_ends = np.flatnonzero(array == ord("\n"))
    tabs_per_line = np.bincount(
        np.searchsorted(line_ends, np.flatnonzero(array == ord("\t"))), minlength=len(line_ends)
    )
    ragged = np.flatnonzero(tabs_per_line != FIELDS - 1)
    for index in ragged:
        tally.report(
            path,
            first_line + int(index),
            "wrong field count",
            f"expected {FIELDS} tab-separated fields, found {tabs_per_line[index] + 1}",
        )
    keep = np.ones(len(line_ends), dtype=bool)
    keep[ragged] = False
    starts = np.concatenate([[0], line_ends[:-1] + 1])
    kept = b"".join(block[start : end + 1] for start, end in zip(starts[keep], line_ends[keep]))
    return kept, np.flatnonzero(keep) + first_line


def hex_expressions() -> list[pl.Expr]:
    """Each C column's hex string as an integer; null where missing, signed, not hex or too long."""
    return [
        pl.when(
            (pl.col(name).str.len_bytes() <= MAX_HEX_DIGITS)
            & ~pl.col(name).str.starts_with("-")
            & ~pl.col(name).str.starts_with("+")
        )
        .then(pl.col(name).str.to_integer(base=16, strict=False))
        .alias(name)
        for name in CRITEO.sparse_features
    ]


def parsed_expressions() -> list[pl.Expr]:
    """Each raw string column parsed to an integer; null where missing or unparseable."""
    label = [pl.col(CRITEO.label).str.to_integer(strict=False)]
    dense = [pl.col(name).str.to_integer(strict=False) for name in CRITEO.dense_features]
    return label + dense + hex_expressions()


def problem_masks(raw: pl.DataFrame, parsed: pl.DataFrame) -> pl.DataFrame:
    """One boolean column per field: True where a present raw value did not parse (or a label is not 0/1).

    The one definition of a valid row, shared by the fast and the checked path.
    """
    masks = {CRITEO.label: ~parsed[CRITEO.label].is_in([0, 1]).fill_null(False)}
    for name in (*CRITEO.dense_features, *CRITEO.sparse_features):
        masks[name] = (raw[name].is_not_null() & parsed[name].is_null()).fill_null(False)
    return pl.DataFrame(masks)


def convert(raw: pl.DataFrame, line_numbers: np.ndarray, path: str, tally: BadRowTally) -> pl.DataFrame:
    """Parse and validate the raw strings; report bad rows; transform the rest into the prepared schema."""
    parsed = raw.select(parsed_expressions())
    masks = problem_masks(raw, parsed)
    bad = masks.select(pl.any_horizontal(pl.all())).to_series()
    if bad.any():
        for row_index in np.flatnonzero(bad.to_numpy()):
            kind, detail = describe_problem(masks.row(int(row_index), named=True), raw.row(int(row_index), named=True))
            tally.report(path, int(line_numbers[row_index]), kind, detail)
        parsed = parsed.filter(~bad)
    return parsed.select(prepared_expressions())


def describe_problem(masks: dict[str, bool], raw: dict[str, str | None]) -> tuple[str, str]:
    """The first problem of a row, as (summary kind, message naming the field and the value)."""
    field = next(name for name in CRITEO.columns if masks[name])
    value = raw[field]
    if field == CRITEO.label:
        return "bad label", f"label: expected 0 or 1, got {value!r}"
    if field in CRITEO.dense_features:
        return f"{field} not an integer", f"{field}: expected an integer, got {value!r}"
    return (
        f"{field} not hex",
        f"{field}: expected an unsigned hex string of at most {MAX_HEX_DIGITS} digits, got {value!r}",
    )


def prepared_expressions() -> list[pl.Expr]:
    """Parsed integers to the prepared schema (see `recsys.data.schema`)."""
    label = [pl.col(CRITEO.label).cast(pl.Float32)]
    dense = [
        pl.col(name).clip(lower_bound=0).cast(pl.Float64).log1p().fill_null(0.0).cast(pl.Float32)
        for name in CRITEO.dense_features
    ]
    sparse = [pl.col(name).fill_null(MISSING_ID).cast(pl.Int64) for name in CRITEO.sparse_features]
    return label + dense + sparse
