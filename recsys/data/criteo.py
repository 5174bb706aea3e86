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
    with open_raw(path) as stream:
        while True:
            data = stream.read(block_bytes)
            if not data:
                break
            data = remainder + data
            cut = data.rfind(b"\n") + 1
            remainder = data[cut:]
            if cut:
                yield data[:cut], next_line
                next_line += data.count(b"\n", 0, cut)
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
    except pl.exceptions.ComputeError:
        return None
    hexes = typed.select(hex_expressions())
    invalid = [typed[name].is_not_null() & hexes[name].is_null() for name in CRITEO.sparse_features]
    invalid.append(~typed[CRITEO.label].is_in([0, 1]).fill_null(False))
    if pl.DataFrame(invalid).select(pl.any_horizontal(pl.all()).any()).item():
        return None
    parsed = pl.concat([typed.select(CRITEO.label, *CRITEO.dense_features), hexes], how="horizontal")
    return parsed.select(prepared_expressions())


def parse_checked_block(block: bytes, first_line: int, path: str, tally: BadRowTally) -> pl.DataFrame:
    """The careful path: every line and value checked, problems reported with their line."""
    block, line_numbers = drop_ragged_lines(block, first_line, path, tally)
    raw = read_fields(block)
    return convert(raw, line_numbers, path, tally)


def read_fields(block: bytes) -> pl.DataFrame:
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


def drop_ragged_lines(
    block: bytes, first_line: int, path: str, tally: BadRowTally
) -> tuple[bytes, np.ndarray]:
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
    """Each C column's hex string as an integer; null where missing, not hex or too long."""
    return [
        pl.when(pl.col(name).str.len_bytes() <= MAX_HEX_DIGITS)
        .then(pl.col(name).str.to_integer(base=16, strict=False))
        .alias(name)
        for name in CRITEO.sparse_features
    ]


def parsed_expressions() -> list[pl.Expr]:
    """Each raw string column parsed to an integer; null where missing or unparseable."""
    label = [pl.col(CRITEO.label).str.to_integer(strict=False)]
    dense = [pl.col(name).str.to_integer(strict=False) for name in CRITEO.dense_features]
    return label + dense + hex_expressions()


def convert(raw: pl.DataFrame, line_numbers: np.ndarray, path: str, tally: BadRowTally) -> pl.DataFrame:
    """Parse and validate the raw strings; transform into the prepared schema."""
    parsed = raw.select(parsed_expressions())
    bad = bad_value_mask(raw, parsed)
    if bad.any():
        report_bad_values(raw, parsed, bad, line_numbers, path, tally)
        raw, parsed = raw.filter(~bad), parsed.filter(~bad)
    return parsed.select(prepared_expressions())


def bad_value_mask(raw: pl.DataFrame, parsed: pl.DataFrame) -> pl.Series:
    invalid = [
        (raw[name].is_not_null() & (parsed[name].is_null() | (parsed[name] < 0)))
        for name in CRITEO.sparse_features
    ]
    invalid += [raw[name].is_not_null() & parsed[name].is_null() for name in CRITEO.dense_features]
    invalid.append(~parsed[CRITEO.label].is_in([0, 1]).fill_null(False))
    return pl.DataFrame(invalid).select(pl.any_horizontal(pl.all())).to_series()


def report_bad_values(
    raw: pl.DataFrame,
    parsed: pl.DataFrame,
    bad: pl.Series,
    line_numbers: np.ndarray,
    path: str,
    tally: BadRowTally,
) -> None:
    for row_index in np.flatnonzero(bad.to_numpy()):
        line = int(line_numbers[row_index])
        kind, detail = describe_bad_row(raw.row(int(row_index), named=True), parsed.row(int(row_index), named=True))
        tally.report(path, line, kind, detail)


def describe_bad_row(raw: dict, parsed: dict) -> tuple[str, str]:
    """The first problem of a row, as (summary kind, message naming the field and value)."""
    if parsed[CRITEO.label] not in (0, 1):
        return "bad label", f"label: expected 0 or 1, got {raw[CRITEO.label]!r}"
    for name in CRITEO.dense_features:
        if raw[name] is not None and parsed[name] is None:
            return f"{name} not an integer", f"{name}: expected an integer, got {raw[name]!r}"
    for name in CRITEO.sparse_features:
        if raw[name] is not None and (parsed[name] is None or parsed[name] < 0):
            return (
                f"{name} not hex",
                f"{name}: expected a hex string of at most {MAX_HEX_DIGITS} digits, got {raw[name]!r}",
            )
    raise AssertionError("describe_bad_row called on a valid row")


def prepared_expressions() -> list[pl.Expr]:
    """Parsed integers to the prepared schema (see `recsys.data.schema`)."""
    label = [pl.col(CRITEO.label).cast(pl.Float32)]
    dense = [
        pl.col(name).clip(lower_bound=0).cast(pl.Float64).log1p().fill_null(0.0).cast(pl.Float32)
        for name in CRITEO.dense_features
    ]
    sparse = [pl.col(name).fill_null(MISSING_ID).cast(pl.Int64) for name in CRITEO.sparse_features]
    return label + dense + sparse
