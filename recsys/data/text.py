"""Reader of line-oriented raw formats (Criteo TSV, Avazu CSV, libFM) into prepared columns, streaming.

A `TextFormat` is a separator and a list of fields of known kinds (see `recsys.data.fields`), with
no quoting. Files are read in blocks of whole lines (plain, or compressed as their first bytes say:
see `recsys.data.compressed`), so memory stays bounded whatever the file size, and each block is
parsed by polars. Every value is checked: a row with the
wrong number of fields, a bad label or a value its field cannot parse is reported with its file and
line (see `bad_rows`), and so is a line with bytes that are not UTF-8; within a block, rows are
reported in line order whatever is wrong with them. Most blocks are clean, so each is first parsed
the fast way (integer fields typed by polars, one separator count for the whole block); only a
block where that finds a problem is parsed again line by line and value by value, to say exactly
which row is wrong and why.

A format may name a header: a file whose first line is exactly that header skips it (Avazu's
train.csv has one, its dev.csv does not). Windows line ends are accepted.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from recsys.data.bad_rows import BadRowTally
from recsys.data.compressed import CorruptStream, TrailingBytes, raw_chunks
from recsys.data.fields import Kind
from recsys.data.schema import DatasetSchema, raw_fields_of, schema_of

MAX_LINE_BYTES = 1 << 20
"""Raw lines are a few hundred bytes; a megabyte without a line end means the file is something else."""
RECOMPRESS = "Recompress what decompresses (e.g. gzip -dc FILE | gzip > FIXED.gz)"
MAX_SHOWN_BYTES = 80
"""A field with bytes that are not UTF-8 is shown up to this many bytes."""
SEPARATOR_NAMES = {"\t": "tab", ",": "comma", " ": "space", ";": "semicolon"}


class Problem(NamedTuple):
    """A malformed row found while parsing a block, reported once the whole block is checked."""

    line: int
    kind: str
    detail: str


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
            for block, first_line in line_blocks(path, block_bytes, tally, self.title):
                if self.raw_separator:
                    block = block.replace(self.raw_separator, self.separator.encode())
                if first_line == 1 and self.header:
                    block, first_line = skip_header(block, self.header_line)
                yield parse_block(self, block, first_line, str(path), tally), len(block)


def line_blocks(path: Path, block_bytes: int, tally: BadRowTally, title: str = "text") -> Iterator[tuple[bytes, int]]:
    """Yield (block of whole lines ending in a newline, 1-based number of its first line).

    Bytes after the end of a compressed stream are reported to `tally` after every line before them.
    Nothing here holds a block while the caller works on the one yielded, so memory stays near two blocks.
    """
    next_line = 1
    remainder = b""
    try:
        for data in joined_chunks(raw_chunks(path, block_bytes), block_bytes):
            data = remainder + data
            cut = data.rfind(b"\n") + 1
            remainder = data[cut:]
            if len(remainder) > MAX_LINE_BYTES:
                line = next_line + data.count(b"\n", 0, cut)
                raise ValueError(f"{path}:{line}: no line end in {MAX_LINE_BYTES:,} bytes; is this a {title} file?")
            block = data[:cut]
            del data
            if block:
                lines = block.count(b"\n")
                yield normalise_line_ends(block), next_line
                next_line += lines
            del block
    except TrailingBytes as error:
        if remainder:
            yield normalise_line_ends(remainder + b"\n"), next_line
            next_line += 1
        detail = f"{error}; every line before it was read. {RECOMPRESS}"
        tally.report(str(path), next_line, "trailing bytes", detail)
        return
    except (OSError, CorruptStream) as error:
        raise ValueError(f"{path}: cannot read past line {next_line - 1}: {error}") from error
    if remainder:
        yield normalise_line_ends(remainder + b"\n"), next_line


def joined_chunks(chunks: Iterator[bytes], size: int) -> Iterator[bytes | bytearray]:
    """The same bytes in pieces of at least `size` (but the last), so blocks stay large whatever the chunking.

    A chunk of `size` or more passes as it is; smaller ones are gathered in one buffer (no second copy to
    join them), handed over without a reference kept. Trailing bytes after a compressed stream are raised
    only after every byte before them is yielded.
    """
    buffer = bytearray()
    handed: list[bytes | bytearray] = []
    try:
        for chunk in chunks:
            if not buffer and len(chunk) >= size:
                handed.append(chunk)
            else:
                buffer += chunk
                if len(buffer) >= size:
                    handed.append(buffer)
                    buffer = bytearray()
            del chunk
            if handed:
                yield handed.pop()
    except TrailingBytes:
        if buffer:
            yield buffer
        raise
    if buffer:
        yield buffer


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
    """The careful path: every line and value checked, problems reported in line order, whatever their kind."""
    problems: list[Problem] = []
    block, line_numbers = drop_ragged_lines(text, block, first_line, problems)
    block, line_numbers = drop_undecodable_lines(text, block, line_numbers, problems)
    if block:
        raw = read_csv(text, block, {name: pl.String for name, _ in text.fields})
        prepared = convert(text, raw, line_numbers, problems)
    else:
        prepared = empty_frame(text)
    for problem in sorted(problems, key=lambda problem: problem.line):
        tally.report(path, problem.line, problem.kind, problem.detail)
    return prepared


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
    return convert(text, raw, np.zeros(0, dtype=np.int64), [])


def drop_ragged_lines(
    text: TextFormat, block: bytes, first_line: int, problems: list[Problem]
) -> tuple[bytes, np.ndarray]:
    """Note lines without exactly the format's field count; return the remaining lines and their numbers."""
    line_ends = line_ends_of(block)
    separators = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord(text.separator))
    per_line = np.bincount(np.searchsorted(line_ends, separators), minlength=len(line_ends))
    ragged = np.flatnonzero(per_line != text.field_count - 1)
    separator_name = SEPARATOR_NAMES.get(text.separator, repr(text.separator))
    for index in ragged:
        found = f"expected {text.field_count} {separator_name}-separated fields, found {per_line[index] + 1}"
        problems.append(Problem(first_line + int(index), "wrong field count", found))
    line_numbers = np.arange(first_line, first_line + len(line_ends), dtype=np.int64)
    return without_lines(block, line_ends, ragged, line_numbers)


def drop_undecodable_lines(
    text: TextFormat, block: bytes, line_numbers: np.ndarray, problems: list[Problem]
) -> tuple[bytes, np.ndarray]:
    """Note lines with bytes that are not UTF-8, naming the field and showing its bytes escaped; drop them."""
    position = first_undecodable_byte(block, 0)
    if position is None:
        return block, line_numbers
    line_ends = line_ends_of(block)
    undecodable = []
    while position is not None:
        index = int(np.searchsorted(line_ends, position))
        start = int(line_ends[index - 1]) + 1 if index else 0
        field, value = field_at(text, block[start : line_ends[index]], position - start)
        detail = f"{field}: bytes that are not UTF-8: {value[:MAX_SHOWN_BYTES]!r}"
        problems.append(Problem(int(line_numbers[index]), "not UTF-8", detail))
        undecodable.append(index)
        position = first_undecodable_byte(block, int(line_ends[index]) + 1)
    return without_lines(block, line_ends, np.array(undecodable), line_numbers)


def first_undecodable_byte(block: bytes, start: int) -> int | None:
    """Offset in `block` of the first byte from `start` on that is not valid UTF-8, or None."""
    try:
        codecs.utf_8_decode(memoryview(block)[start:], "strict", True)
    except UnicodeDecodeError as error:
        return start + error.start
    return None


def field_at(text: TextFormat, line: bytes, offset: int) -> tuple[str, bytes]:
    """(name, raw bytes) of the field of `line` that holds byte `offset`."""
    end = 0
    for (name, _), value in zip(text.fields, line.split(text.separator.encode())):
        end += len(value) + 1
        if offset < end:
            return name, value
    return text.fields[-1][0], line


def line_ends_of(block: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))


def without_lines(
    block: bytes, line_ends: np.ndarray, dropped: np.ndarray, line_numbers: np.ndarray
) -> tuple[bytes, np.ndarray]:
    """`block` without the lines at indices `dropped`, and the numbers of the lines kept."""
    if not len(dropped):
        return block, line_numbers
    keep = np.ones(len(line_ends), dtype=bool)
    keep[dropped] = False
    starts = np.concatenate([[0], line_ends[:-1] + 1])
    kept = b"".join(block[start : end + 1] for start, end in zip(starts[keep], line_ends[keep]))
    return kept, line_numbers[keep]


def parsed_expressions(text: TextFormat, typed: bool) -> list[pl.Expr]:
    """Each field parsed by its kind; null where missing or unparseable."""
    return [kind.parse(pl.col(name), typed and kind.typed).alias(name) for name, kind in text.fields]


def problem_masks(text: TextFormat, raw: pl.DataFrame, parsed: pl.DataFrame) -> pl.DataFrame:
    """One boolean column per field: True where the row must be reported. The one definition of a valid row."""
    masks = {name: kind.problem(pl.col(f"raw_{name}"), pl.col(name)).alias(name) for name, kind in text.fields}
    both = pl.concat([raw.rename(lambda name: f"raw_{name}"), parsed], how="horizontal")
    return both.select(list(masks.values()))


def convert(text: TextFormat, raw: pl.DataFrame, line_numbers: np.ndarray, problems: list[Problem]) -> pl.DataFrame:
    """Parse and validate the raw strings; note bad rows in `problems`; transform the rest into the prepared schema."""
    parsed = raw.select(parsed_expressions(text, typed=False))
    masks = problem_masks(text, raw, parsed)
    bad = masks.select(pl.any_horizontal(pl.all())).to_series()
    if bad.any():
        kinds = dict(text.fields)
        for row_index in np.flatnonzero(bad.to_numpy()):
            flags = masks.row(int(row_index), named=True)
            field = next(name for name, _ in text.fields if flags[name])
            kind, detail = kinds[field].message(field, raw[field][int(row_index)])
            problems.append(Problem(int(line_numbers[row_index]), kind, detail))
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
