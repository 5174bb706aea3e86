"""The serving form of a trained model: unsharded, its lookup compacted (`LookupModule.compact`).

Pruning trains full tables and serves only the kept rows; this is where the one becomes the other.
The trained (possibly sharded) weights are gathered into a fresh unsharded model of the same job,
whose lookup is then replaced by its compact form.
"""

from __future__ import annotations

from torch import nn

from recsys.tables.interface import LookupModule
from recsys.train.distributed import compute_device, gathered_state_dict
from recsys.train.job import Job, build


def lookup_path(model: nn.Module) -> str:
    """The attribute path of the model's lookup module (every model has exactly one)."""
    paths = [name for name, module in model.named_modules() if isinstance(module, LookupModule)]
    if len(paths) != 1:
        raise ValueError(f"expected one lookup module in the model, found {len(paths)}: {paths}")
    return paths[0]


def lookup_of(model: nn.Module) -> LookupModule:
    return model.get_submodule(lookup_path(model))


def serving_model(job: Job, trained: nn.Module) -> nn.Module:
    """An unsharded copy of `trained` (a model of `job`) whose lookup is in its compact form."""
    model, _ = build(job)
    model.load_state_dict(gathered_state_dict(trained))
    path = lookup_path(model)
    parent, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent), attribute, lookup_of(model).compact())
    return model.to(compute_device()).eval()
