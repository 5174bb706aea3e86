"""The serving form of a trained model: unsharded, its lookup compacted (`LookupModule.compact`).

Pruning trains full tables and serves only the kept rows; this is where the one becomes the other.
The trained (possibly sharded) weights are gathered into a fresh unsharded model of the same job,
whose lookup is then replaced by its compact form.
"""

from __future__ import annotations

from torch import nn

from recsys.tables.interface import lookup_of, replace_lookup
from recsys.train.distributed import compute_device, gathered_state_dict
from recsys.train.job import Job, build


def serving_model(job: Job, trained: nn.Module) -> nn.Module:
    """An unsharded copy of `trained` (a model of `job`) whose lookup is in its compact form."""
    model, _ = build(job)
    model.load_state_dict(gathered_state_dict(trained))
    return compacted(model)


def compacted(model: nn.Module) -> nn.Module:
    """`model` (unsharded) itself, its lookup replaced by its compact form, in eval mode."""
    replace_lookup(model, lookup_of(model).compact())
    return model.to(compute_device()).eval()
