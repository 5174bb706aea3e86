"""Every table preset in tables/ trains through DMP with the fused optimizer, and its memory report
matches what torchrec allocates for the optimizer state and what the serving form's tables hold
(the trained tables themselves, or for `pruned` the compacted ones, which must predict the same)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.tables import build_lookup, load_spec
from recsys.train.distributed import ensure_process_group, shard_model
from recsys.train.loop import train
from tests.tables.conftest import FEATURES, PRESETS, single_id_batch, statistics  # noqa: F401


@pytest.mark.parametrize("preset", PRESETS, ids=[path.stem for path in PRESETS])
def test_preset_trains_and_reports_real_memory(make_job, preset):
    job = make_job(load_spec(preset).to_dict(), batch_size=1024)
    try:
        result = train(job)
    except ValueError as error:
        if "needs at least" not in str(error):
            raise
        pytest.skip(f"the small test cache is below this preset's minimum size: {error}")
    served = (result.serving or result.model.module).lookup
    tables = bool(served.table_configs())  # dhe has none: a dense decoder, trained by the dense optimizer
    assert result.metrics["test/auc"] > (0.6 if tables else 0.52)  # the decoder learns far slower per step
    table_bytes = sum(local_bytes(weight) for weight in served.storage.state_dict().values())
    state = result.model.fused_optimizer.state_dict()["state"]
    optimizer_bytes = sum(local_bytes(tensor) for table in state.values() for tensor in table.values())
    extra = served.extra_parameter_bytes() if tables else 0
    assert table_bytes == result.memory.parameter_bytes - extra
    assert served.index_bytes() == result.memory.index_bytes
    assert optimizer_bytes == result.memory.optimizer_bytes
    if result.serving is not None:
        assert result.metrics["compact/test/auc"] == pytest.approx(result.metrics["test/auc"], abs=1e-6)
        assert result.metrics["compact/table/total_bytes"] == result.memory.total_bytes


@pytest.mark.parametrize("preset", PRESETS, ids=[path.stem for path in PRESETS])
def test_sharded_lookup_gives_the_same_vectors_in_any_key_order(preset, statistics):  # noqa: F811
    ensure_process_group()
    torch.manual_seed(0)
    lookup = build_lookup(load_spec(preset), statistics)
    reference = copy.deepcopy(lookup)
    sharded = shard_model(lookup, sparse_learning_rate=0.05)
    ids = np.stack([np.resize(statistics.frequencies(feature)[0], 8) for feature in FEATURES], axis=1)
    batch = single_id_batch(ids)
    reordered = KeyedJaggedTensor.from_jt_dict({key: batch[key] for key in reversed(FEATURES)})
    expected = reference(batch).to_dict()
    with torch.no_grad():
        for features in (batch, reordered, batch):
            found = sharded(features).to_dict()
            for feature in FEATURES:
                torch.testing.assert_close(found[feature], expected[feature])


def local_bytes(tensor) -> int:
    shards = [shard.tensor for shard in tensor.local_shards()] if hasattr(tensor, "local_shards") else [tensor]
    return sum(shard.numel() * shard.element_size() for shard in shards)


def test_dense_adagrad_trains_too(make_job):
    result = train(make_job(dense_optimizer="adagrad", dense_learning_rate=0.01, epochs=2))
    assert result.metrics["test/auc"] > 0.7
