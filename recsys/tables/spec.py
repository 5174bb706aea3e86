"""Table specs: the typed, validated contents of a `tables/*.toml` file.

Every spec names its `strategy` and the model's `embedding_dim`. Strategies that can be sized take
exactly one of three budgets, so that comparisons are at equal memory:

    rows = 100_000      rows per feature, directly
    compression = 10    total bytes = (bytes of the full table) / 10
    bytes = 50_000_000  total bytes of the strategy's tables and indexes
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

ShardingType = Literal["table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel"]
"""How torchrec may split a table over processes (see `recsys.train.sharding`)."""

DIM_MULTIPLE = 4
"""torchrec's fused (fbgemm) tables need row widths divisible by 4, even on CPU."""


def check_split(option: str, embedding_dim: int, parts: int) -> None:
    """Refuse splitting `embedding_dim` into `parts` concatenated rows whose widths fbgemm cannot hold."""
    if embedding_dim % (parts * DIM_MULTIPLE):
        raise ValueError(
            f"{option} splits embedding_dim {embedding_dim} into {parts} parts whose widths must be multiples "
            f"of {DIM_MULTIPLE}: make embedding_dim a multiple of {parts * DIM_MULTIPLE}"
        )


def check_width(name: str, width: int) -> None:
    """Refuse a table row width fbgemm cannot hold."""
    if width <= 0 or width % DIM_MULTIPLE:
        raise ValueError(f"{name} must be a positive multiple of {DIM_MULTIPLE} (fbgemm's tables need it), got {width}")


@dataclass(frozen=True)
class TableSpec:
    """Keys every strategy shares.

    `sharding` overrides how single tables are split over processes, by storage table name or by
    feature name (every table that feature uses), for example `sharding = { C3 = "row_wise" }`.
    """

    strategy: str
    embedding_dim: int = 16
    sharding: dict[str, ShardingType] = field(default_factory=dict)
    init_std: float | None = None
    """Rows start as normal(0, init_std); None keeps torchrec's uniform(+-sqrt(1 / rows)), DLRM's.
    Small tables start with large rows under the latter, which FM-style pair products amplify."""

    def __post_init__(self) -> None:
        check_width("embedding_dim", self.embedding_dim)
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"init_std must be positive, got {self.init_std}")

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None and value != {}}

    def budget_label(self) -> str:
        """The budget as runs are compared by it: "full" for a spec without one."""
        return "full"


@dataclass(frozen=True)
class BudgetSpec(TableSpec):
    """A spec sized by exactly one of `rows`, `compression` or `bytes`."""

    rows: int | None = None
    compression: float | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [name for name in ("rows", "compression", "bytes") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one budget of rows, compression or bytes; got {', '.join(given) or 'none'}")
        if self.rows is not None and self.rows <= 0:
            raise ValueError(f"rows must be positive, got {self.rows}")
        if self.compression is not None and self.compression < 1:
            raise ValueError(f"compression must be at least 1, got {self.compression}")
        if self.bytes is not None and self.bytes <= 0:
            raise ValueError(f"bytes must be positive, got {self.bytes}")

    def budget_label(self) -> str:
        """`10x` for a compression, else the rows or bytes given (`4096 rows`, `100000 bytes`)."""
        if self.compression is not None:
            return f"{self.compression:g}x"
        return f"{self.rows} rows" if self.rows is not None else f"{self.bytes} bytes"
