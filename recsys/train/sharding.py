"""How the storage tables are split over processes: torchrec's planner, or an explicit plan.

    --sharding auto            tables whole, placed by torchrec's planner within --rank-memory;
                               row-wise where whole tables do not fit
    --sharding table_wise      each table whole on one rank, tables balanced by bytes
    --sharding row_wise        every table's rows split evenly over all ranks
    --sharding column_wise     every table's columns split over ranks (widths stay multiples of 4)
    --sharding table_row_wise  rows split over the ranks of one host
    --sharding data_parallel   every rank holds every table; gradients are all-reduced (slow: whole tables)

A table spec may override single tables, by table or feature name (`sharding = { C3 = "row_wise" }`).
On CPU torchrec's planner knows only table-wise, column-wise and data-parallel, so any other type
makes the whole plan explicit (`construct_module_sharding_plan`), built here for every table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.model_parallel import get_default_sharders
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.sharding_plan import (
    column_wise,
    construct_module_sharding_plan,
    data_parallel,
    row_wise,
    table_row_wise,
    table_wise,
)
from torchrec.distributed.types import ParameterSharding, ShardingPlan, ShardingType
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from recsys.tables.budget import FLOAT_BYTES
from recsys.tables.spec import DIM_MULTIPLE
from recsys.tables.spec import ShardingType as TableShardingType

SHARDING_CHOICES = ("auto", *get_args(TableShardingType))
PLANNER_TYPES_ON_CPU = {ShardingType.TABLE_WISE.value, ShardingType.COLUMN_WISE.value, ShardingType.DATA_PARALLEL.value}
"""The types torchrec's planner can plan on CPU; any other type needs an explicit plan there."""


class ShardingError(ValueError):
    """A plan that cannot be made: says what it needs and what to change."""


@dataclass(frozen=True)
class ShardingRequest:
    """What the user asked for: a default type, per-table overrides, a per-rank memory budget."""

    default: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    rank_memory: int | None = None
    sparse_optimizer: str = "rowwise_adagrad"
    batch_size: int = 4096
    """Rows per rank and batch, for the planner's estimate of input and output buffers."""

    def __post_init__(self) -> None:
        if self.default not in SHARDING_CHOICES:
            raise ShardingError(f"unknown sharding {self.default!r}; choose one of {', '.join(SHARDING_CHOICES)}")
        if self.rank_memory is not None and self.rank_memory <= 0:
            raise ShardingError(f"--rank-memory must be positive, got {self.rank_memory}")


def storage_collections(model: nn.Module) -> dict[str, EmbeddingBagCollection]:
    """Module path -> every EmbeddingBagCollection of the model (what DMP shards)."""
    return {path: module for path, module in model.named_modules() if isinstance(module, EmbeddingBagCollection)}


def storage_configs(model: nn.Module) -> list[EmbeddingBagConfig]:
    """Every storage table's config, across all EmbeddingBagCollections of the model."""
    return [config for module in storage_collections(model).values() for config in module.embedding_bag_configs()]


def table_types(model: nn.Module, request: ShardingRequest) -> dict[str, str]:
    """Table name -> its sharding type ("auto" where the planner decides), overrides applied."""
    configs = storage_configs(model)
    types = {config.name: request.default for config in configs}
    for key, kind in request.overrides.items():
        matched = [config.name for config in configs if key == config.name or key in base_features(config)]
        if not matched:
            features = sorted({feature for config in configs for feature in base_features(config)})
            raise ShardingError(
                f"sharding override {key!r} names no table or feature; tables: {', '.join(types)}; "
                f"features: {', '.join(features)}"
            )
        types.update(dict.fromkeys(matched, kind))
    return types


def base_features(config: EmbeddingBagConfig) -> set[str]:
    """The input features a table serves ("C3/h0" and "C3#1" both serve C3)."""
    return {name.split("/")[0].split("#")[0] for name in config.feature_names}


def plan_sharding(
    model: nn.Module, request: ShardingRequest, world_size: int, local_world_size: int, device: torch.device
) -> ShardingPlan:
    """The sharding plan of every storage table of `model` over `world_size` ranks.

    Rank 0 plans and sends the plan (or its error) to the others, so all ranks always agree.
    """
    outcome: ShardingPlan | ShardingError | None = None
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            outcome = make_plan(model, request, world_size, local_world_size, device)
        except ShardingError as error:
            outcome = error
    if dist.is_initialized() and dist.get_world_size() > 1:
        shared = [outcome]
        dist.broadcast_object_list(shared, src=0)
        outcome = shared[0]
    if isinstance(outcome, ShardingError):
        raise outcome
    return outcome


def make_plan(
    model: nn.Module, request: ShardingRequest, world_size: int, local_world_size: int, device: torch.device
) -> ShardingPlan:
    """`auto` tables: table-wise placed by torchrec's planner, or row-wise where table-wise cannot fit."""
    types = table_types(model, request)
    shapes = table_shapes(model)
    needs_explicit = device.type == "cpu" and any(
        kind != "auto" and kind not in PLANNER_TYPES_ON_CPU for kind in types.values()
    )
    if needs_explicit or "auto" not in types.values():
        plan = explicit_plan(model, types, world_size, local_world_size, device)
    else:
        try:
            plan = planner_plan(model, types, request, world_size, local_world_size, device)
        except ShardingError as error:
            if request.rank_memory is None:
                raise
            split = {name: ShardingType.ROW_WISE.value if kind == "auto" else kind for name, kind in types.items()}
            plan = explicit_plan(model, split, world_size, local_world_size, device)
            if max(rank_bytes(plan, shapes, world_size, request.sparse_optimizer)) > request.rank_memory:
                raise error
    check_rank_memory(plan, shapes, world_size, request)
    return plan


def planner_plan(
    model: nn.Module,
    types: dict[str, str],
    request: ShardingRequest,
    world_size: int,
    local_world_size: int,
    device: torch.device,
) -> ShardingPlan:
    """torchrec's planner: `auto` tables whole (table-wise, fused kernel), placed within --rank-memory.

    Table-wise keeps every table's optimizer state as one process would, so results do not depend
    on the plan; where whole tables do not fit, `make_plan` splits them row-wise instead.
    """
    constraints = {
        name: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value if kind == "auto" else kind],
            compute_kernels=[kernel_for(kind)],
        )
        for name, kind in types.items()
    }
    rank_memory = request.rank_memory
    capacity = {} if rank_memory is None else {"hbm_cap" if device.type == "cuda" else "ddr_cap": rank_memory}
    topology = Topology(
        world_size=world_size, compute_device=device.type, local_world_size=local_world_size, **capacity
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=request.batch_size,
        storage_reservation=HeuristicalStorageReservation(percentage=0.0),
        constraints=constraints,
        debug=False,
    )
    try:
        return planner.plan(model, get_default_sharders())
    except PlannerError as error:
        reason = str(error).splitlines()[0]
        raise ShardingError(memory_advice(model, world_size, request, reason)) from error


def kernel_for(kind: str) -> str:
    if kind == ShardingType.DATA_PARALLEL.value:
        return EmbeddingComputeKernel.DENSE.value
    return EmbeddingComputeKernel.FUSED.value


def explicit_plan(
    model: nn.Module, types: dict[str, str], world_size: int, local_world_size: int, device: torch.device
) -> ShardingPlan:
    """A plan built table by table; "auto" tables go table-wise, tables balanced over ranks by bytes."""
    placement = balanced_ranks(model, types, world_size)
    plan = {}
    for path, module in storage_collections(model).items():
        generators = {
            config.name: generator_for(types[config.name], config, placement, world_size, local_world_size)
            for config in module.embedding_bag_configs()
        }
        plan[path] = construct_module_sharding_plan(
            module, generators, local_size=local_world_size, world_size=world_size, device_type=device.type
        )
    return ShardingPlan(plan)


def balanced_ranks(model: nn.Module, types: dict[str, str], world_size: int) -> dict[str, int]:
    """Rank of each table-wise table: largest first onto the least loaded rank."""
    configs = storage_configs(model)
    whole = [config for config in configs if types[config.name] in ("auto", ShardingType.TABLE_WISE.value)]
    load = [0] * world_size
    placement = {}
    for config in sorted(whole, key=lambda config: -config.num_embeddings * config.embedding_dim):
        rank = min(range(world_size), key=load.__getitem__)
        placement[config.name] = rank
        load[rank] += config.num_embeddings * config.embedding_dim
    return placement


def generator_for(
    kind: str, config: EmbeddingBagConfig, placement: dict[str, int], world_size: int, local_world_size: int
):
    if kind in ("auto", ShardingType.TABLE_WISE.value):
        return table_wise(rank=placement[config.name])
    if kind == ShardingType.ROW_WISE.value:
        return row_wise()
    if kind == ShardingType.TABLE_ROW_WISE.value:
        hosts = max(1, world_size // local_world_size)
        return table_row_wise(host_index=sum(map(ord, config.name)) % hosts)
    if kind == ShardingType.COLUMN_WISE.value:
        return column_wise(ranks=column_ranks(config, placement, world_size))
    return data_parallel()


def column_ranks(config: EmbeddingBagConfig, placement: dict[str, int], world_size: int) -> list[int]:
    """As many column shards as ranks allow with widths that stay multiples of 4 (fbgemm needs it)."""
    shards = max(count for count in range(1, world_size + 1) if config.embedding_dim % (count * DIM_MULTIPLE) == 0)
    first = sum(map(ord, config.name)) % world_size  # spread narrow tables over ranks, deterministically
    return [(first + index) % world_size for index in range(shards)]


def table_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Table name -> (rows, columns) of every storage table."""
    return {config.name: (config.num_embeddings, config.embedding_dim) for config in storage_configs(model)}


def state_bytes(rows: int, columns: int, sparse_optimizer: str) -> int:
    """Optimizer-state bytes of a shard: one float per row (row-wise Adagrad), per weight (Adagrad), two per
    weight (Adam), none (SGD)."""
    per_row = {"rowwise_adagrad": 1, "adagrad": columns, "sgd": 0, "adam": 2 * columns}[sparse_optimizer]
    return rows * per_row * FLOAT_BYTES


def rank_bytes(
    plan: ShardingPlan, shapes: dict[str, tuple[int, int]], world_size: int, sparse_optimizer: str = "rowwise_adagrad"
) -> list[int]:
    """Table and optimizer-state bytes each rank holds under `plan`."""
    totals = [0] * world_size
    for module_plan in plan.plan.values():
        for table, sharding in module_plan.items():
            for rank, rows, columns in shard_shapes(sharding, shapes[table], world_size):
                totals[rank] += rows * columns * FLOAT_BYTES + state_bytes(rows, columns, sparse_optimizer)
    return totals


def shard_shapes(sharding: ParameterSharding, shape: tuple[int, int], world_size: int) -> list[tuple[int, int, int]]:
    """(rank, rows, columns) of every shard of one table; data-parallel tables sit whole on every rank."""
    if sharding.sharding_type == ShardingType.DATA_PARALLEL.value or sharding.sharding_spec is None:
        return [(rank, *shape) for rank in range(world_size)]
    return [
        (shard.placement.rank(), shard.shard_sizes[0], shard.shard_sizes[1]) for shard in sharding.sharding_spec.shards
    ]


def check_rank_memory(
    plan: ShardingPlan, shapes: dict[str, tuple[int, int]], world_size: int, request: ShardingRequest
) -> None:
    if request.rank_memory is None:
        return
    totals = rank_bytes(plan, shapes, world_size, request.sparse_optimizer)
    over = [rank for rank, total in enumerate(totals) if total > request.rank_memory]
    if over:
        raise ShardingError(
            f"the plan puts {format_bytes(max(totals))} of tables and optimizer state on rank {over[0]}, more than "
            f"--rank-memory {format_bytes(request.rank_memory)}; raise --rank-memory, use more processes (--nproc), "
            "shard the large tables row_wise, or compress them (a smaller table budget)"
        )


def memory_advice(model: nn.Module, world_size: int, request: ShardingRequest, reason: str) -> str:
    """What the tables need per rank, for a planner failure."""
    shapes = table_shapes(model)
    sizes = [
        rows * columns * FLOAT_BYTES + state_bytes(rows, columns, request.sparse_optimizer)
        for rows, columns in shapes.values()
    ]
    even = math.ceil(sum(sizes) / world_size)
    budget = "no limit" if request.rank_memory is None else format_bytes(request.rank_memory)
    return (
        f"torchrec's planner found no plan ({reason}). The tables need {format_bytes(sum(sizes))} with optimizer "
        f"state, at least {format_bytes(even)} per rank over {world_size} ranks (the largest table alone: "
        f"{format_bytes(max(sizes))}), plus the dense layers and batch buffers torchrec counts; --rank-memory is "
        f"{budget}. Raise --rank-memory, use more processes (--nproc), shard the large tables row_wise "
        "(--sharding row_wise), or compress them."
    )


def format_bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def describe_plan(
    plan: ShardingPlan, shapes: dict[str, tuple[int, int]], world_size: int, sparse_optimizer: str = "rowwise_adagrad"
) -> str:
    """One line per table (type and ranks), then bytes per rank: what the run prints and logs."""
    lines = []
    for path, module_plan in plan.plan.items():
        for table, sharding in module_plan.items():
            ranks = sorted({rank for rank, _, _ in shard_shapes(sharding, shapes[table], world_size)})
            lines.append(f"{path}.{table}: {sharding.sharding_type} on ranks {ranks}")
    lines += [
        f"rank {rank}: {format_bytes(total)} of tables and optimizer state"
        for rank, total in enumerate(rank_bytes(plan, shapes, world_size, sparse_optimizer))
    ]
    return "\n".join(lines)


def state_layouts(plan: ShardingPlan) -> dict[str, str]:
    """Table -> the shape family of its optimizer state, which a checkpoint can only be resumed into.

    Table-wise, row-wise and table-row-wise keep one state per row ("rows": resharded freely over
    any world size); column-wise with k shards keeps k of them; data-parallel tables keep another kind.
    """
    layouts = {}
    for module_plan in plan.plan.values():
        for table, sharding in module_plan.items():
            kind = sharding.sharding_type
            shards = len(sharding.sharding_spec.shards) if sharding.sharding_spec is not None else 1
            if kind == ShardingType.DATA_PARALLEL.value:
                layouts[table] = "data_parallel"
            elif kind == ShardingType.COLUMN_WISE.value and shards > 1:
                layouts[table] = f"column_wise/{shards}"
            else:
                layouts[table] = "rows"
    return layouts
