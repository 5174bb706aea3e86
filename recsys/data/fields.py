"""Field kinds: the one definition of how a raw value becomes a model input, for files and for requests.

A dataset format is a list of (raw field name, kind). Each kind owns both halves of its rule:

    for files (`recsys data prepare`, `recsys predict`; polars over whole blocks)
        typed      whether polars may read the field straight as Int64 (the fast path of clean blocks)
        parse      raw string (or typed integer) -> parsed value, null where missing or invalid
        problem    True where the row must be reported (a present value that did not parse, a bad label)
        message    what was wrong, naming the field and the raw value
        prepared   the parsed value -> the prepared columns (`outputs`: label, dense or sparse)
    for JSON rows (the server, `ServedModel.predict`; plain Python and numpy, no polars)
        encode         one raw value -> its prepared values, one per model input it feeds
        encode_column  the raw values of a batch -> an array (or a list of bags) per model input

The kinds are listed by the name an artifact records (`KINDS`), and tests feed adversarial values
through both halves and require the same numbers. polars is imported inside the file half only, so
a served model never loads it.

    kind          accepts (JSON)                             becomes
    count         int, or a string of one; null/"" missing   dense log(1 + max(x, 0)) as float32, missing 0
    integer       int, or a string of one; null/"" missing   the id itself, missing -1
    hex           a string of 1-8 hex digits; null missing   int(value, 16), missing -1
    libfm_index   "index:1" or the index as int             the index
    hour          "YYMMDDHH" (string or int)                 <name>_of_day 0-23 and <name>_weekday 0-6 (Monday 0)
    string        a string; null missing                     string_id(value), missing -1
    string_bag    a list of strings or "a|b|c"; null/[] missing   [string_id(v) ...], missing [-1]
    label, ignored  anything                                 nothing (accepted and ignored)
"""

from __future__ import annotations

import datetime
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import polars as pl

Role = Literal["label", "dense", "sparse", "order"]
"""What a prepared column is; an `order` column only orders rows before it is dropped (MovieLens timestamps)."""
MISSING_ID = -1
"""The id of a missing categorical value: a category of its own (missingness carries signal in CTR logs)."""
MAX_HEX_DIGITS = 8
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INTEGER = re.compile(r"[+-]?[0-9]+")
HEX = re.compile(r"[0-9a-fA-F]{1,8}")
HEX_COLUMN = re.compile(r"(?:[0-9a-fA-F]{0,8}\n)*")
LIBFM = re.compile(r"([0-9]{1,18}):1(?:\.0*)?")
HOUR = re.compile(r"[0-9]{8}")
"""Matched whole (`fullmatch`: a `$` would accept a trailing newline, which prepare never sees)."""


class FieldError(ValueError):
    """One raw value that its field's kind does not accept."""


def string_id(value: str) -> int:
    """A stable non-negative 63-bit id of a string: the first 8 bytes of its BLAKE2b digest."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def dense_transform(values: np.ndarray) -> np.ndarray:
    """log(1 + max(x, 0)) of raw integers as float32; NaN stands for missing and becomes 0."""
    clipped = np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0), 0.0, None)
    return np.log1p(clipped).astype(np.float32)


def is_missing(value: Any) -> bool:
    return value is None or value == ""


def parse_integer(value: Any) -> int:
    """An int64 from a JSON int or an ASCII integer string (what polars' str.to_integer accepts)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FieldError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        if not INTEGER.fullmatch(value):
            raise FieldError(f"expected an integer, got {value!r}")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise FieldError(f"expected a 64-bit integer, got {value!r}")
    return value


def plain_integers(values: Sequence) -> np.ndarray | None:
    """`values` as int64 with None as 0 when every one is a JSON integer or null in int64 range; else None."""
    if not set(map(type, values)) <= {int, type(None)}:
        return None
    try:
        return np.array([0 if value is None else value for value in values], dtype=np.int64)
    except OverflowError:
        return None


@dataclass(frozen=True)
class Kind:
    """A plain integer field read as a categorical id (missing -> MISSING_ID)."""

    name = "integer"
    """The name of this kind in an exported artifact's raw-field list (`KINDS`)."""
    typed = True
    batched = True
    """Whether `encode_column` may convert the values of several fields of this kind at once (one output each)."""
    role: Role = "sparse"
    expected = "an integer"

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(name, self.role)]

    def model_inputs(self, name: str) -> list[str]:
        """The outputs a model reads (labels and ordering columns are not model inputs)."""
        return [output for output, role in self.outputs(name) if role in ("dense", "sparse")]

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column if typed else column.str.to_integer(strict=False)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return (raw.is_not_null() & parsed.is_null()).fill_null(False)

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        """(summary kind, detail naming the field and the value) of a reported row."""
        return f"{name} not {self.expected}", f"{name}: expected {self.expected}, got {value!r}"

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        return [pl.col(name).fill_null(MISSING_ID).cast(pl.Int64)]

    def encode(self, value: Any) -> tuple:
        return (MISSING_ID if is_missing(value) else parse_integer(value),)

    def encode_column(self, values: Sequence) -> list:
        integers = plain_integers(values)
        if integers is None:
            return [np.array([self.encode(value)[0] for value in values], dtype=np.int64).reshape(len(values))]
        missing = np.fromiter((value is None for value in values), dtype=bool, count=len(values))
        return [np.where(missing, MISSING_ID, integers)]


@dataclass(frozen=True)
class Ignored(Kind):
    """A field that is read (it counts towards the field count) and dropped, such as Avazu's row id."""

    name = "ignored"
    typed = False
    batched = False

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return []

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        import polars as pl

        return pl.lit(False)

    def prepared(self, name: str) -> list[pl.Expr]:
        return []

    def encode(self, value: Any) -> tuple:
        return ()

    def encode_column(self, values: Sequence) -> list:
        return []


@dataclass(frozen=True)
class Label(Ignored):
    """The click label: `negative` or `positive` (0/1, or libFM's -1/1), required; prepared as 0.0 or 1.0.
    A served row may carry it; it is ignored there."""

    name = "label"
    typed = True
    role: Role = "label"
    positive: int = 1
    negative: int = 0

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(name, self.role)]

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return Kind.parse(self, column, typed)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return ~parsed.is_in([self.negative, self.positive]).fill_null(False)

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        first, second = sorted((self.negative, self.positive))
        return "bad label", f"{name}: expected {first} or {second}, got {value!r}"

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        return [(pl.col(name) == self.positive).cast(pl.Float32)]


@dataclass(frozen=True)
class Threshold(Label):
    """A numeric score turned into the label: 1.0 at or above `threshold` (MovieLens: rating >= 4 is a click)."""

    typed = False
    threshold: float = 4.0
    low: float = 0.0
    high: float = 5.0

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        import polars as pl

        value = column.cast(pl.Float64, strict=False)
        return pl.when(value.is_between(self.low, self.high)).then(value)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return parsed.is_null()

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        return f"bad {name}", f"{name}: expected a number from {self.low:g} to {self.high:g}, got {value!r}"

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        return [(pl.col(name) >= self.threshold).cast(pl.Float32)]


@dataclass(frozen=True)
class Order(Ignored):
    """A required integer that orders the rows (a timestamp), then dropped; not a model input."""

    typed = True
    role: Role = "order"

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(name, self.role)]

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return Kind.parse(self, column, typed)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return parsed.is_null()

    def prepared(self, name: str) -> list[pl.Expr]:
        return Kind.prepared(self, name)


@dataclass(frozen=True)
class Count(Kind):
    """A non-negative count as a dense feature: log(1 + max(x, 0)), missing -> 0 (Criteo's I1..I13)."""

    name = "count"
    role: Role = "dense"

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        return [pl.col(name).clip(lower_bound=0).cast(pl.Float64).log1p().fill_null(0.0).cast(pl.Float32)]

    def encode(self, value: Any) -> tuple:
        if is_missing(value):
            return (0.0,)
        return (float(np.float32(math.log1p(float(max(parse_integer(value), 0))))),)

    def encode_column(self, values: Sequence) -> list:
        """log1p of the distinct values only, with math.log1p as `encode` (and prepare) use."""
        integers = plain_integers(values)
        if integers is None:
            return [np.array([self.encode(value)[0] for value in values], dtype=np.float32).reshape(len(values))]
        distinct, inverse = np.unique(np.maximum(integers, 0), return_inverse=True)
        logs = np.array([math.log1p(float(value)) for value in distinct.tolist()], dtype=np.float64)
        return [logs.astype(np.float32)[inverse].reshape(len(values))]


@dataclass(frozen=True)
class Hex(Kind):
    """An unsigned hex string of at most 8 digits, as its integer (Criteo's C1..C26, Avazu's ids)."""

    name = "hex"
    typed = False
    expected = f"an unsigned hex string of at most {MAX_HEX_DIGITS} digits"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        import polars as pl

        unsigned = ~column.str.starts_with("-") & ~column.str.starts_with("+")
        return pl.when((column.str.len_bytes() <= MAX_HEX_DIGITS) & unsigned).then(
            column.str.to_integer(base=16, strict=False)
        )

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        return f"{name} not hex", f"{name}: expected {self.expected}, got {value!r}"

    def encode(self, value: Any) -> tuple:
        if value is None:
            return (MISSING_ID,)
        if not isinstance(value, str) or not (value == "" or HEX.fullmatch(value)):
            raise FieldError(f"expected {self.expected}, got {value!r}")
        return (MISSING_ID if value == "" else int(value, 16),)

    def encode_column(self, values: Sequence) -> list:
        """One regular-expression check of all the strings, then int(value, 16) (a numpy digit-by-digit
        conversion measured no faster at Criteo's 13k values per 512 rows)."""
        strings = ["" if value is None else value for value in values]
        if set(map(type, strings)) <= {str}:
            joined = "\n".join(strings) + "\n"
            if joined.count("\n") == len(strings) and HEX_COLUMN.fullmatch(joined):
                return [np.array([int(value, 16) if value else MISSING_ID for value in strings], dtype=np.int64)]
        return [np.array([self.encode(value)[0] for value in values], dtype=np.int64).reshape(len(values))]


@dataclass(frozen=True)
class LibFMIndex(Kind):
    """A libFM `index:1` token, as the index (one-hot fields of a libFM file, such as Frappe's)."""

    name = "libfm_index"
    typed = False
    batched = False
    expected = "a libFM 'index:1' token"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column.str.extract(r"^([0-9]{1,18}):1(?:\.0*)?$").str.to_integer(strict=False)

    def encode(self, value: Any) -> tuple:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
            return (value,)
        match = LIBFM.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise FieldError(f"expected a libFM 'index:1' token or a non-negative index, got {value!r}")
        return (int(match.group(1)),)

    def encode_column(self, values: Sequence) -> list:
        return [np.array([self.encode(value)[0] for value in values], dtype=np.int64).reshape(len(values))]


@dataclass(frozen=True)
class HourOfDay(Kind):
    """Avazu's `hour` (YYMMDDHH): split into the hour of day (0-23) and the weekday (0 = Monday)."""

    name = "hour"
    typed = False
    batched = False
    expected = "an hour as YYMMDDHH"

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(f"{name}_of_day", "sparse"), (f"{name}_weekday", "sparse")]

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        import polars as pl

        day = column.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False).cast(pl.Datetime)
        hour = column.str.slice(6, 2).str.to_integer(strict=False)
        well_formed = column.str.contains(r"^[0-9]{8}$") & (hour < 24)
        return pl.when(well_formed).then(day + pl.duration(hours=hour))

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        moment = pl.col(name)
        return [
            moment.dt.hour().cast(pl.Int64).fill_null(MISSING_ID).alias(f"{name}_of_day"),
            (moment.dt.weekday() - 1).cast(pl.Int64).fill_null(MISSING_ID).alias(f"{name}_weekday"),
        ]

    def encode(self, value: Any) -> tuple:
        """(hour of day, weekday with Monday 0); (-1, -1) when missing."""
        if is_missing(value):
            return MISSING_ID, MISSING_ID
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        try:
            if not isinstance(text, str) or not HOUR.fullmatch(text) or int(text[6:]) > 23:
                raise ValueError
            moment = datetime.datetime.strptime(text[:6], "%y%m%d")
        except ValueError:
            raise FieldError(f"expected {self.expected}, got {value!r}") from None
        return int(text[6:]), moment.weekday()

    def encode_column(self, values: Sequence) -> list:
        pairs = [self.encode(value) for value in values]
        return [np.array([pair[index] for pair in pairs], dtype=np.int64).reshape(len(values)) for index in (0, 1)]


@dataclass(frozen=True)
class String(Kind):
    """A string as an id by `string_id` (a fixed hash: no vocabulary to ship); null or "" (a missing
    field in a file) -> MISSING_ID."""

    name = "string"
    typed = False
    batched = False
    expected = "a string"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        import polars as pl

        return column.map_elements(string_id, return_dtype=pl.Int64, skip_nulls=True)

    def encode(self, value: Any) -> tuple:
        if is_missing(value):
            return (MISSING_ID,)
        if not isinstance(value, str):
            raise FieldError(f"expected {self.expected}, got {value!r}")
        return (string_id(value),)

    def encode_column(self, values: Sequence) -> list:
        return [np.array([self.encode(value)[0] for value in values], dtype=np.int64).reshape(len(values))]


@dataclass(frozen=True)
class StringBag(String):
    """`a|b|c` (or a list of names) as a bag of ids, one `string_id` each; empty or missing -> [MISSING_ID]."""

    name = "string_bag"
    expected = "a list of non-empty strings or 'a|b|c'"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        import polars as pl

        return column.map_elements(self.bag_or_none, return_dtype=pl.List(pl.Int64), skip_nulls=True)

    def bag_or_none(self, text: str) -> list[int] | None:
        """The ids of a file's value, or None (a reported problem) when it is not a bag of names."""
        try:
            return self.encode(text)[0]
        except FieldError:
            return None

    def prepared(self, name: str) -> list[pl.Expr]:
        import polars as pl

        return [pl.col(name).fill_null(pl.lit([MISSING_ID], dtype=pl.List(pl.Int64)))]

    def encode(self, value: Any) -> tuple:
        if value is None or value == "" or value == []:
            return ([MISSING_ID],)
        names = value.split("|") if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise FieldError(f"expected {self.expected}, got {value!r}")
        return ([string_id(name) for name in names],)

    def encode_column(self, values: Sequence) -> list:
        return [[self.encode(value)[0] for value in values]]


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (Kind(), Count(), Hex(), LibFMIndex(), HourOfDay(), String(), StringBag(), Label(), Ignored())
}
"""Every kind by the name an artifact records; a served row is encoded by these (label kinds and
ordering columns are accepted and ignored: they are not model inputs)."""


def kind_named(name: str) -> Kind:
    if name not in KINDS:
        raise ValueError(f"unknown kind {name!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[name]
