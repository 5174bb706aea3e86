"""Read table weights whether `storage` is a plain EmbeddingBagCollection or sharded by DMP.

A strategy that looks at its own weights during training (pruning scores rows by magnitude) sees
them as pieces: the block of rows and columns of one table that this process holds.

    plain EBC, or DMP table-wise:   one piece per table, offsets (0, 0), the whole table
    DMP row-wise on 2 ranks:        rank 0 holds rows [0, n/2), rank 1 rows [n/2, n)
    DMP column-wise on 2 ranks:     rank 0 holds columns [0, d/2), rank 1 columns [d/2, d)

Results computed piece by piece from sharded storage are summed over ranks (`sum_over_ranks`), so
every rank ends with the same answer whatever the sharding; plain storage is whole on every rank
and needs no sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

WEIGHT_PREFIX = "embedding_bags."
WEIGHT_SUFFIX = ".weight"


@dataclass(frozen=True)
class TablePiece:
    """Rows [row_offset, row_offset + len(weights)) and the matching columns of table `table`."""

    table: str
    row_offset: int
    column_offset: int
    weights: torch.Tensor
    replicated: bool = False
    """A whole table that every rank holds (a plain tensor: unsharded storage, or data-parallel)."""


def table_pieces(storage: nn.Module) -> Iterator[TablePiece]:
    """The pieces of every table of `storage` held by this process (views, not copies)."""
    for key, value in storage.state_dict().items():
        if not (key.startswith(WEIGHT_PREFIX) and key.endswith(WEIGHT_SUFFIX)):
            continue
        table = key[len(WEIGHT_PREFIX) : -len(WEIGHT_SUFFIX)]
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                row_offset, column_offset = shard.metadata.shard_offsets
                yield TablePiece(table, row_offset, column_offset, shard.tensor)
        elif type(value) is torch.Tensor or isinstance(value, nn.Parameter):
            yield TablePiece(table, 0, 0, value, replicated=True)
        else:
            raise TypeError(f"table {table}: cannot read weights stored as {type(value).__name__}")


def is_sharded(storage: nn.Module) -> bool:
    """Whether `storage` is split over ranks (then results from its pieces must be summed over ranks)."""
    return any(isinstance(value, ShardedTensor) for value in storage.state_dict().values())


def pieces_once(storage: nn.Module) -> tuple[list[TablePiece], bool]:
    """The pieces this rank adds up, and whether the sums must then be summed over ranks.

    In sharded storage, data-parallel tables are whole on every rank: only rank 0 counts them, so
    that the sum over ranks counts every table once.
    """
    sharded = is_sharded(storage)
    main = not dist.is_initialized() or dist.get_rank() == 0
    pieces = [piece for piece in table_pieces(storage) if not (sharded and piece.replicated and not main)]
    return pieces, sharded


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (nothing to do in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


SCORE_CHUNK_ROWS = 1 << 18
"""Rows read at a time by `row_norms`, so scoring a large table needs little memory beyond the table."""

RowTransform = Callable[[torch.Tensor, str, slice], torch.Tensor]
"""(rows of a piece, its table, its columns) -> the rows as they count (thresholds applied)."""


def row_norms(
    storage: nn.Module,
    row_starts: dict[str, int],
    size: int,
    device: torch.device,
    transform: RowTransform | None = None,
) -> torch.Tensor:
    """L1 norm of every row of every table (after `transform`), tables end to end from `row_starts[table]`
    in a vector of `size` on `device` (where ranks sum it), the same on every rank."""
    norms = torch.zeros(size, device=device)
    pieces, sharded = pieces_once(storage)
    for piece in pieces:
        columns = slice(piece.column_offset, piece.column_offset + piece.weights.shape[1])
        start = row_starts[piece.table] + piece.row_offset
        for begin in range(0, piece.weights.shape[0], SCORE_CHUNK_ROWS):
            chunk = piece.weights[begin : begin + SCORE_CHUNK_ROWS]
            if transform is not None:
                chunk = transform(chunk, piece.table, columns)
            norms[start + begin : start + begin + chunk.shape[0]] += chunk.abs().sum(dim=1).to(device)
    return sum_over_ranks(norms) if sharded else norms


def gather_rows(
    storage: nn.Module, rows: dict[str, torch.Tensor], widths: dict[str, int], device: torch.device
) -> dict[str, torch.Tensor]:
    """The rows `rows[table]` of each table named, their first `widths[table]` columns, whole on every rank
    (on `device`, where ranks sum them)."""
    gathered = {table: torch.zeros(len(wanted), widths[table], device=device) for table, wanted in rows.items()}
    pieces, sharded = pieces_once(storage)
    for piece in pieces:
        if piece.table not in rows:
            continue
        wanted = rows[piece.table]
        inside = (wanted >= piece.row_offset) & (wanted < piece.row_offset + piece.weights.shape[0])
        end = min(piece.column_offset + piece.weights.shape[1], widths[piece.table])
        if end <= piece.column_offset:
            continue
        vectors = piece.weights[(wanted[inside] - piece.row_offset).to(piece.weights.device)]
        gathered[piece.table][inside, piece.column_offset : end] = vectors[:, : end - piece.column_offset].to(device)
    if sharded:
        for table in gathered.values():
            sum_over_ranks(table)
    return gathered


def write_rows(storage: nn.Module, table: str, rows: torch.Tensor, values: torch.Tensor) -> None:
    """Set rows `rows` of `table` to `values` [len(rows), dim] in every piece this process holds.

    Every rank must pass the same rows and values; each writes the block of them its pieces cover.
    """
    for piece in table_pieces(storage):
        if piece.table != table:
            continue
        inside = (rows >= piece.row_offset) & (rows < piece.row_offset + piece.weights.shape[0])
        columns = slice(piece.column_offset, piece.column_offset + piece.weights.shape[1])
        local = (rows[inside] - piece.row_offset).to(piece.weights.device)
        piece.weights[local] = values[inside][:, columns].to(piece.weights.device, piece.weights.dtype)
