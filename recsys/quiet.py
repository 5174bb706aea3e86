"""Silence the harmless warnings torch and torchrec print on CPU, for a readable command line."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1"))
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    warnings.filterwarnings("ignore", message=".*TopologyFactory.*")
    warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")  # a checkpoint read by one process
    # data-parallel tables: torchrec wraps fbgemm's dense kernel in its own autograd function (they train)
    warnings.filterwarnings("ignore", message=".*dense_embedding_codegen_lookup_function.*autograd kernel.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger().setLevel(logging.ERROR)  # torchrec warns through the root logger
    for name in ("torchrec", "torch.fx._symbolic_trace", "torch.distributed", "fbgemm_gpu", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
