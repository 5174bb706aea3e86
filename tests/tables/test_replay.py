"""Every strategy rebuilds exactly from the statistics its constructor recorded (how an exported model loads)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from recsys.data.stats import RecordingStatistics, ReplayedStatistics
from recsys.tables import build_lookup
from recsys.tables.registry import build_serving_lookup
from tests.tables.conftest import single_id_batch, training_ids
from tests.tables.test_contract import seen_ids


def round_trip(recording: RecordingStatistics, tmp_path) -> ReplayedStatistics:
    """Through a weights-only file, as an artifact stores the record."""
    index, arrays = recording.to_record()
    torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, tmp_path / "statistics.pt")
    loaded = torch.load(tmp_path / "statistics.pt", weights_only=True)
    return ReplayedStatistics.from_record(index, {key: value.numpy() for key, value in loaded.items()})


def test_a_lookup_rebuilt_from_its_record_gives_the_same_vectors(spec, statistics, tmp_path):
    torch.manual_seed(3)
    recording = RecordingStatistics(statistics)
    trained = build_lookup(spec, recording)
    torch.manual_seed(99)  # a different seed: nothing of the rebuild may depend on the random state
    shape = trained.serving_shape()
    if shape is None:
        rebuilt = build_lookup(spec, round_trip(recording, tmp_path))
    else:  # a form rebuilt from its shape and state alone, as export does: nothing recorded is needed
        rebuilt = build_serving_lookup(spec, round_trip(RecordingStatistics(statistics), tmp_path), shape)
    rebuilt.load_state_dict(trained.state_dict())
    ids = np.concatenate([seen_ids(40), np.array([[-7, 2**62, 5, 0]])])
    torch.testing.assert_close(rebuilt(single_id_batch(ids)).values(), trained(single_id_batch(ids)).values())
    assert rebuilt.memory_report() == trained.memory_report()


def test_the_record_keeps_only_what_was_asked(statistics):
    recording = RecordingStatistics(statistics)
    recording.vocabulary("small", 1)
    index, arrays = recording.to_record()
    assert [item["feature"] for item in index["vocabularies"]] == ["small"] and index["frequencies"] == []
    assert sum(array.nbytes for array in arrays.values()) == 8 * len(np.unique(training_ids()["small"]))


def test_rebuilding_lookups_imports_no_polars():
    code = "import sys, recsys.tables, recsys.models, recsys.data.stats; print('polars' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"
