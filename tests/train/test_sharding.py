"""Sharding plans: per-table overrides, explicit plans where the CPU planner has no such type,
bytes per rank, and a plan that does not fit explained."""

from __future__ import annotations

import pytest
import torch

from recsys.tables import build_lookup, spec_from_mapping
from recsys.train.distributed import ensure_process_group, shard_model
from recsys.train.sharding import (
    ShardingError,
    ShardingRequest,
    column_ranks,
    make_plan,
    plan_sharding,
    rank_bytes,
    table_shapes,
    table_types,
)
from tests.tables.conftest import statistics  # noqa: F401
from tests.train.test_presets import local_bytes

CPU = torch.device("cpu")


def lookup_of(statistics, **tables):  # noqa: F811
    return build_lookup(spec_from_mapping({"strategy": "hashing", "rows": 1000, **tables}), statistics)


def plan_types(plan) -> dict[str, str]:
    return {table: sharding.sharding_type for module in plan.plan.values() for table, sharding in module.items()}


def test_overrides_name_tables_or_features(statistics):  # noqa: F811
    lookup = lookup_of(statistics, hash_functions=2, combine="concat")
    request = ShardingRequest("table_wise", {"huge": "row_wise", "hashing_small": "data_parallel"})
    types = table_types(lookup, request)
    assert types == {
        "hashing_small": "data_parallel",
        "hashing_medium": "table_wise",
        "hashing_large": "table_wise",
        "hashing_huge": "row_wise",  # its storage features are huge/h0 and huge/h1
    }
    with pytest.raises(ShardingError, match="names no table or feature.*tables: hashing_small.*features: huge"):
        table_types(lookup, ShardingRequest("auto", {"C99": "row_wise"}))


def test_row_wise_on_cpu_gets_an_explicit_plan(statistics):  # noqa: F811
    ensure_process_group()
    lookup = lookup_of(statistics)
    plan = plan_sharding(lookup, ShardingRequest("auto", {"large": "row_wise"}), 1, 1, CPU)
    assert plan_types(plan) == {
        "hashing_small": "table_wise",
        "hashing_medium": "table_wise",
        "hashing_large": "row_wise",
        "hashing_huge": "table_wise",
    }


def test_bytes_per_rank_are_what_the_shards_hold(statistics):  # noqa: F811
    ensure_process_group()
    lookup = lookup_of(statistics)
    shapes = table_shapes(lookup)
    sharded = shard_model(lookup, sparse_learning_rate=0.05, request=ShardingRequest("row_wise"))
    tables = sum(local_bytes(weight) for weight in sharded.module.storage.state_dict().values())
    state = sharded.fused_optimizer.state_dict()["state"]
    optimizer = sum(local_bytes(tensor) for table in state.values() for tensor in table.values())
    assert rank_bytes(sharded.plan, shapes, 1) == [tables + optimizer]


def test_a_plan_that_does_not_fit_says_what_it_needs(statistics):  # noqa: F811
    ensure_process_group()
    needed = sum(rows * (columns + 1) * 4 for rows, columns in table_shapes(lookup_of(statistics)).values())
    for sharding in ("auto", "row_wise"):
        with pytest.raises(ShardingError, match="rank-memory") as error:
            plan_sharding(lookup_of(statistics), ShardingRequest(sharding, rank_memory=needed // 2), 1, 1, CPU)
        assert "--nproc" in str(error.value)
    plan = plan_sharding(lookup_of(statistics), ShardingRequest("row_wise", rank_memory=needed), 1, 1, CPU)
    assert plan_types(plan)["hashing_huge"] == "row_wise"


def test_auto_places_whole_tables_within_a_fair_budget_and_splits_them_when_they_do_not_fit(statistics):  # noqa: F811
    ensure_process_group()
    full = build_lookup(spec_from_mapping({"strategy": "full"}), statistics)  # one table holds most rows
    needed = sum(rows * (columns + 1) * 4 for rows, columns in table_shapes(full).values())
    fair = ShardingRequest("auto", rank_memory=needed + 8 * 2**20, batch_size=512)  # room for dense parts too
    assert set(plan_types(plan_sharding(full, fair, 1, 1, CPU)).values()) == {"table_wise"}
    # two ranks, each with 60% of the tables' bytes: the largest table cannot sit whole on one of them
    tight = ShardingRequest("auto", rank_memory=int(needed * 0.6), batch_size=512)
    assert set(plan_types(make_plan(full, tight, 2, 2, CPU)).values()) == {"row_wise"}


def test_optimizer_state_is_counted_for_the_optimizer_in_use(statistics):  # noqa: F811
    ensure_process_group()
    lookup = lookup_of(statistics)
    shapes = table_shapes(lookup)
    plan = plan_sharding(lookup, ShardingRequest("table_wise"), 1, 1, CPU)
    weights = sum(rows * columns * 4 for rows, columns in shapes.values())
    rows = sum(rows for rows, _ in shapes.values())
    assert rank_bytes(plan, shapes, 1, "sgd") == [weights]
    assert rank_bytes(plan, shapes, 1, "rowwise_adagrad") == [weights + rows * 4]
    assert rank_bytes(plan, shapes, 1, "adagrad") == [2 * weights]


def test_column_shards_keep_widths_fbgemm_can_hold():
    from torchrec.modules.embedding_configs import EmbeddingBagConfig

    def ranks(dim: int, world_size: int) -> list[int]:
        config = EmbeddingBagConfig(name="t", embedding_dim=dim, num_embeddings=10, feature_names=["f"])
        return column_ranks(config, {}, world_size)

    assert len(ranks(16, 2)) == 2 and len(ranks(16, 4)) == 4
    assert len(ranks(16, 3)) == 2  # 16 / 3 columns is no multiple of 4
    assert len(ranks(4, 2)) == 1
    assert sorted(ranks(16, 4)) == [0, 1, 2, 3]
