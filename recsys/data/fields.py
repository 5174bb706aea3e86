"""Field kinds of raw text formats: how one raw value is parsed, checked and turned into prepared columns.

A text format (see `recsys.data.text`) is a list of fields, each of one kind. A kind says

- `typed`: whether polars may read the field straight as Int64 (the fast path of clean blocks);
- `parse`: the raw string (or typed integer) -> a parsed value, null where missing or invalid;
- `problem`: True where the row must be reported (a present value that did not parse, a bad label);
- `message`: what was wrong, naming the field and the raw value;
- `outputs` and `prepared`: the prepared columns the field becomes (label, dense or sparse).

These are the one definition of how raw values become model inputs; serving reuses the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from recsys.data.schema import MISSING_ID

Role = Literal["label", "dense", "sparse", "order"]
"""What a prepared column is; an `order` column only orders rows before it is dropped (MovieLens timestamps)."""
MAX_HEX_DIGITS = 8


@dataclass(frozen=True)
class Kind:
    """A plain integer field read as a categorical id (missing -> MISSING_ID)."""

    typed = True
    serving = "integer"
    """The name of this kind in an exported artifact's raw-field list (see `recsys.serving.rows`)."""
    role: Role = "sparse"
    expected = "an integer"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column if typed else column.str.to_integer(strict=False)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return (raw.is_not_null() & parsed.is_null()).fill_null(False)

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        """(summary kind, detail naming the field and the value) of a reported row."""
        return f"{name} not {self.expected}", f"{name}: expected {self.expected}, got {value!r}"

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(name, self.role)]

    def prepared(self, name: str) -> list[pl.Expr]:
        return [pl.col(name).fill_null(MISSING_ID).cast(pl.Int64)]


@dataclass(frozen=True)
class Label(Kind):
    """The click label: `negative` or `positive` (0/1, or libFM's -1/1), required; prepared as 0.0 or 1.0."""

    serving = "label"
    role: Role = "label"
    positive: int = 1
    negative: int = 0

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return ~parsed.is_in([self.negative, self.positive]).fill_null(False)

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        first, second = sorted((self.negative, self.positive))
        return "bad label", f"{name}: expected {first} or {second}, got {value!r}"

    def prepared(self, name: str) -> list[pl.Expr]:
        return [(pl.col(name) == self.positive).cast(pl.Float32)]


@dataclass(frozen=True)
class Threshold(Kind):
    """A numeric score turned into the label: 1.0 at or above `threshold` (MovieLens: rating >= 4 is a click)."""

    serving = "label"
    typed = False
    role: Role = "label"
    threshold: float = 4.0
    low: float = 0.0
    high: float = 5.0

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        value = column.cast(pl.Float64, strict=False)
        return pl.when(value.is_between(self.low, self.high)).then(value)

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return parsed.is_null()

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        return f"bad {name}", f"{name}: expected a number from {self.low:g} to {self.high:g}, got {value!r}"

    def prepared(self, name: str) -> list[pl.Expr]:
        return [(pl.col(name) >= self.threshold).cast(pl.Float32)]


@dataclass(frozen=True)
class Order(Kind):
    """A required integer that orders the rows (a timestamp), then dropped."""

    serving = "ignored"
    role: Role = "order"

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return parsed.is_null()


@dataclass(frozen=True)
class Count(Kind):
    """A non-negative count as a dense feature: log(1 + max(x, 0)), missing -> 0 (Criteo's I1..I13)."""

    serving = "count"
    role: Role = "dense"

    def prepared(self, name: str) -> list[pl.Expr]:
        return [pl.col(name).clip(lower_bound=0).cast(pl.Float64).log1p().fill_null(0.0).cast(pl.Float32)]


@dataclass(frozen=True)
class Hex(Kind):
    """An unsigned hex string of at most 8 digits, as its integer (Criteo's C1..C26, Avazu's ids)."""

    serving = "hex"
    typed = False
    expected = f"an unsigned hex string of at most {MAX_HEX_DIGITS} digits"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        unsigned = ~column.str.starts_with("-") & ~column.str.starts_with("+")
        return pl.when((column.str.len_bytes() <= MAX_HEX_DIGITS) & unsigned).then(
            column.str.to_integer(base=16, strict=False)
        )

    def message(self, name: str, value: str | None) -> tuple[str, str]:
        return f"{name} not hex", f"{name}: expected {self.expected}, got {value!r}"


@dataclass(frozen=True)
class LibFMIndex(Kind):
    """A libFM `index:1` token, as the index (one-hot fields of a libFM file, such as Frappe's)."""

    serving = "libfm_index"
    typed = False
    expected = "a libFM 'index:1' token"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column.str.extract(r"^([0-9]{1,18}):1(?:\.0*)?$").str.to_integer(strict=False)


@dataclass(frozen=True)
class HourOfDay(Kind):
    """Avazu's `hour` (YYMMDDHH): split into the hour of day (0-23) and the weekday (0 = Monday)."""

    serving = "hour"
    typed = False
    expected = "an hour as YYMMDDHH"

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        day = column.str.slice(0, 6).str.strptime(pl.Date, "%y%m%d", strict=False).cast(pl.Datetime)
        hour = column.str.slice(6, 2).str.to_integer(strict=False)
        well_formed = column.str.contains(r"^[0-9]{8}$") & (hour < 24)
        return pl.when(well_formed).then(day + pl.duration(hours=hour))

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return [(f"{name}_of_day", "sparse"), (f"{name}_weekday", "sparse")]

    def prepared(self, name: str) -> list[pl.Expr]:
        moment = pl.col(name)
        return [
            moment.dt.hour().cast(pl.Int64).fill_null(MISSING_ID).alias(f"{name}_of_day"),
            (moment.dt.weekday() - 1).cast(pl.Int64).fill_null(MISSING_ID).alias(f"{name}_weekday"),
        ]


@dataclass(frozen=True)
class Ignored(Kind):
    """A field that is read (it counts towards the field count) and dropped, such as Avazu's row id."""

    serving = "ignored"
    typed = False

    def parse(self, column: pl.Expr, typed: bool) -> pl.Expr:
        return column

    def problem(self, raw: pl.Expr, parsed: pl.Expr) -> pl.Expr:
        return pl.lit(False)

    def outputs(self, name: str) -> list[tuple[str, Role]]:
        return []

    def prepared(self, name: str) -> list[pl.Expr]:
        return []
