"""torchrec DistributedModelParallel, even for one process.

Training goes through DMP with world size 1 so that fbgemm's fused table-batched kernels and the
fused row-wise Adagrad (applied in backward, touching only the rows a batch used) do the sparse
work: measured on this 2-core machine, 18 ms per step against about 2 s for a plain
EmbeddingBagCollection with a dense Adagrad over whole tables.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.model_parallel import DistributedModelParallel, get_default_sharders
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from recsys.tables.shards import sum_over_ranks


def compute_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def ensure_process_group() -> None:
    """Join the torchrun group when launched by torchrun; otherwise make a private group of one."""
    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [
        parameter
        for module in model.modules()
        if isinstance(module, EmbeddingBagCollection)
        for parameter in module.parameters()
    ]


def table_constraints(model: nn.Module) -> dict[str, ParameterConstraints]:
    """Every table sharded table-wise with the fused kernel.

    Left alone, the planner makes small tables data-parallel with the dense kernel: those are then
    trained by the dense optimizer, not the fused row-wise Adagrad, and fbgemm warns that their
    backward has no registered autograd kernel. One optimizer for all tables keeps runs comparable.
    """
    return {
        config.name: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value], compute_kernels=[EmbeddingComputeKernel.FUSED.value]
        )
        for module in model.modules()
        if isinstance(module, EmbeddingBagCollection)
        for config in module.embedding_bag_configs()
    }


def plan_sharding(model: nn.Module, device: torch.device) -> ShardingPlan:
    world_size = dist.get_world_size()
    topology = Topology(
        world_size=world_size,
        compute_device=device.type,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", world_size)),
    )
    planner = EmbeddingShardingPlanner(topology=topology, constraints=table_constraints(model), debug=False)
    return planner.collective_plan(model, get_default_sharders(), dist.GroupMember.WORLD)


def shard_model(model: nn.Module, sparse_learning_rate: float) -> DistributedModelParallel:
    """Wrap `model` in DMP with fused row-wise Adagrad on every table, keeping its initial weights."""
    initial_state = copy.deepcopy(model.state_dict())
    apply_optimizer_in_backward(RowWiseAdagrad, embedding_parameters(model), {"lr": sparse_learning_rate})
    device = compute_device()
    sharded = DistributedModelParallel(model, device=device, plan=plan_sharding(model, device))
    sharded.load_state_dict(initial_state)  # DMP initialises its shards afresh; keep the seeded weights
    return sharded


def make_optimizer(model: DistributedModelParallel, name: str, learning_rate: float) -> CombinedOptimizer:
    """The fused table optimizer combined with Adam or Adagrad on the dense parameters."""
    dense_class = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad}[name]
    dense_parameters = dict(in_backward_optimizer_filter(model.named_parameters()))
    dense = KeyedOptimizerWrapper(dense_parameters, lambda parameters: dense_class(parameters, lr=learning_rate))
    return CombinedOptimizer([model.fused_optimizer, dense])


def gathered_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a (DMP-sharded) model with every sharded tensor assembled whole, on every rank."""
    state = {}
    for key, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            whole = torch.zeros(value.size(), dtype=value.dtype, device=compute_device())
            for shard in value.local_shards():
                block = tuple(
                    slice(offset, offset + size)
                    for offset, size in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes)
                )
                whole[block] = shard.tensor
            value = sum_over_ranks(whole)
        state[key] = value
    return state
