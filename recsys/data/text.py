"""Reader of line-oriented raw formats (Criteo TSV, Avazu CSV, libFM) into prepared columns, streaming.

A `TextFormat` is a separator and a list of fields of known kinds (see `recsys.data.fields`), with
no quoting. Files are read in blocks of whole lines (plain or gzip), so memory stays bounded
whatever the file size, and each block is parsed by polars. Every value is checked: a row with the
wrong number of fields, a bad label or a value its field cannot parse is reported with its file and
line (see `bad_rows`). Most blocks are clean, so each is first parsed the fast way (integer fields
typed by polars, one separator count for the whole block); only a block where that finds a problem
is parsed again line by line and value by value, to say exactly which row is wrong and why.

A format may name a header: a file whose first line is exactly that header skips it (Avazu's
train.csv has one, its dev.csv does not). Windows line ends are accepted.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.bad_rows import BadRowTally
from recsys.data.fields import Kind
from recsys.data.schema import DatasetSchema, raw_fields_of, schema_of

MAX_LINE_BYTES = 1 << 20
"""Raw lines are a few hundred bytes; a megabyte without a line end means the file is something else."""
SEPARATOR_NAMES = {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon"}


@dataclass(frozen=True)
class TextFormat:
    """A line-oriented raw format: `fields` in order, split by `separator`, optionally a header line."""

    name: str
    title: str
    separator: str
    fields: tuple[tuple[str, Kind], ...]
    header: bool = False
    raw_separator: bytes | None = None
    """A multi-byte separator in the files (MovieLens' `::`), replaced by `separator` as blocks are read."""
    line_numbers: bool = False
    """Add each row's 1-based line in its file as a `line` column (for checks made after reading)."""

    @property
    def field_count(self) -> int:
        return len(self.fields)

    @cached_property
    def schema(self) -> DatasetSchema:
        return schema_of(self.name, self.fields)

    def raw_fields(self) -> list[dict]:
        """Each raw field with its kind and the model inputs it feeds (see `recsys.serving.rows`)."""
        return raw_fields_of(self.fields)

    @property
    def header_line(self) -> bytes:
        return self.separator.join(name for name, _ in self.fields).encode()

    def read(
        self, paths: list[Path], tally: BadRowTally, block_bytes: int = 32 << 20
    ) -> Iterator[tuple[pl.DataFrame, int]]:
        """Yield (prepared block, raw bytes it came from) over all files in order."""
        for path in paths:
            for block, first_line in line_blocks(path, block_bytes, self.title):
                if self.raw_separator:
                    block = block.replace(self.raw_separator, self.separator.encode())
                if first_line == 1 and self.header:
                    block, first_line = skip_header(block, self.header_line)
                yield parse_block(self, block, first_line, str(path), tally), len(block)


def open_raw(path: Path) -> io.BufferedIOBase:
    """Open a raw file for binary reading, decompressing `.gz` on the fly."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def line_blocks(path: Path, block_bytes: int, title: str = "text") -> Iterator[tuple[bytes, int]]:
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
                    raise ValueError(f"{path}:{line}: no line end in {MAX_LINE_BYTES:,} bytes; is this a {title} file?")
                if cut:
                    yield normalise_line_ends(data[:cut]), next_line
                    next_line += data.count(b"\n", 0, cut)
    except (OSError, EOFError) as error:  # unreadable, or a corrupt or truncated gzip stream
        raise ValueError(f"{path}: cannot read past line {next_line - 1}: {error}") from error
    if remainder:
        yield normalise_line_ends(remainder + b"\n"), next_line


def normalise_line_ends(block: bytes) -> bytes:
    return block.replace(b"\r\n", b"\n") if b"\r" in block else block


def skip_header(block: bytes, header: bytes) -> tuple[bytes, int]:
    """Drop the block's first line if it is the header; return the rest and its first line number."""
    first_end = block.find(b"\n")
    if block[:first_end] == header:
        return block[first_end + 1 :], 2
    return block, 1


def parse_block(text: TextFormat, block: bytes, first_line: int, path: str, tally: BadRowTally) -> pl.DataFrame:
    """Turn one block of raw lines into prepared columns, reporting malformed rows to `tally`."""
    line_count = block.count(b"\n")
    if block.count(text.separator.encode()) == (text.field_count - 1) * line_count:
        prepared = parse_clean_block(text, block)
        if prepared is not None:
            lines = np.arange(first_line, first_line + line_count, dtype=np.int64)
            return prepared.with_columns(line=lines) if text.line_numbers else prepared
    return parse_checked_block(text, block, first_line, path, tally)


def parse_clean_block(text: TextFormat, block: bytes) -> pl.DataFrame | None:
    """The fast path: integer fields typed by polars; None if anything is off (the checked path then finds what)."""
    if not block:
        return empty_frame(text)
    if text.separator != " " and b" " in block:
        return None  # polars' typed reading accepts " 3" as 3 and " " as missing; the checked path refuses both
    schema = {name: pl.Int64 if kind.typed else pl.String for name, kind in text.fields}
    try:
        typed = read_csv(text, block, schema)
    except pl.exceptions.PolarsError:
        return None
    parsed = typed.select(parsed_expressions(text, typed=True))
    if problem_masks(text, typed, parsed).select(pl.any_horizontal(pl.all()).any()).item():
        return None
    return parsed.select(prepared_expressions(text))


def parse_checked_block(text: TextFormat, block: bytes, first_line: int, path: str, tally: BadRowTally) -> pl.DataFrame:
    """The careful path: every line and value checked, problems reported with their line."""
    block, line_numbers = drop_ragged_lines(text, block, first_line, path, tally)
    if not block:
        return empty_frame(text)
    raw = read_csv(text, block, {name: pl.String for name, _ in text.fields})
    return convert(text, raw, line_numbers, path, tally)


def read_csv(text: TextFormat, block: bytes, schema: dict) -> pl.DataFrame:
    return pl.read_csv(
        io.BytesIO(block),
        separator=text.separator,
        has_header=False,
        schema=schema,
        quote_char=None,
        truncate_ragged_lines=False,
    )


def empty_frame(text: TextFormat) -> pl.DataFrame:
    raw = pl.DataFrame(schema={name: pl.String for name, _ in text.fields})
    return convert(text, raw, np.zeros(0, dtype=np.int64), "", BadRowTally())


def drop_ragged_lines(
    text: TextFormat, block: bytes, first_line: int, path: str, tally: BadRowTally
) -> tuple[bytes, np.ndarray]:
    """Report lines without exactly the format's field count; return the remaining lines and their numbers."""
    array = np.frombuffer(block, dtype=np.uint8)
    line_ends = np.flatnonzero(array == ord("\n"))
    separators = np.flatnonzero(array == ord(text.separator))
    per_line = np.bincount(np.searchsorted(line_ends, separators), minlength=len(line_ends))
    ragged = np.flatnonzero(per_line != text.field_count - 1)
    separator_name = SEPARATOR_NAMES.get(text.separator, repr(text.separator))
    for index in ragged:
        tally.report(
            path,
            first_line + int(index),
            "wrong field count",
            f"expected {text.field_count} {separator_name}-separated fields, found {per_line[index] + 1}",
        )
    keep = np.ones(len(line_ends), dtype=bool)
    keep[ragged] = False
    starts = np.concatenate([[0], line_ends[:-1] + 1])
    kept = b"".join(block[start : end + 1] for start, end in zip(starts[keep], line_ends[keep]))
    return kept, np.flatnonzero(keep) + first_line


def parsed_expressions(text: TextFormat, typed: bool) -> list[pl.Expr]:
    """Each field parsed by its kind; null where missing or unparseable."""
    return [kind.parse(pl.col(name), typed and kind.typed).alias(name) for name, kind in text.fields]


def problem_masks(text: TextFormat, raw: pl.DataFrame, parsed: pl.DataFrame) -> pl.DataFrame:
    """One boolean column per field: True where the row must be reported. The one definition of a valid row."""
    masks = {name: kind.problem(pl.col(f"raw_{name}"), pl.col(name)).alias(name) for name, kind in text.fields}
    both = pl.concat([raw.rename(lambda name: f"raw_{name}"), parsed], how="horizontal")
    return both.select(list(masks.values()))


def convert(
    text: TextFormat, raw: pl.DataFrame, line_numbers: np.ndarray, path: str, tally: BadRowTally
) -> pl.DataFrame:
    """Parse and validate the raw strings; report bad rows; transform the rest into the prepared schema."""
    parsed = raw.select(parsed_expressions(text, typed=False))
    masks = problem_masks(text, raw, parsed)
    bad = masks.select(pl.any_horizontal(pl.all())).to_series()
    if bad.any():
        kinds = dict(text.fields)
        for row_index in np.flatnonzero(bad.to_numpy()):
            flags = masks.row(int(row_index), named=True)
            field = next(name for name, _ in text.fields if flags[name])
            kind, detail = kinds[field].message(field, raw[field][int(row_index)])
            tally.report(path, int(line_numbers[row_index]), kind, detail)
        parsed = parsed.filter(~bad)
        line_numbers = line_numbers[~bad.to_numpy()]
    prepared = parsed.select(prepared_expressions(text))
    return prepared.with_columns(line=line_numbers) if text.line_numbers else prepared


def prepared_expressions(text: TextFormat) -> list[pl.Expr]:
    """Parsed values to the prepared schema, in its column order (label, dense, sparse)."""
    expressions = {}
    for name, kind in text.fields:
        for expression, (output, _) in zip(kind.prepared(name), kind.outputs(name)):
            expressions[output] = expression.alias(output)
    outputs = [output for field, kind in text.fields for output in kind.outputs(field)]
    columns = [name for role in ("label", "dense", "sparse", "order") for name, kind in outputs if kind == role]
    return [expressions[name] for name in columns]
