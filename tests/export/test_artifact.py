"""An exported model loads without the training code and predicts from raw rows what the trained model predicts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from recsys.cli import main
from recsys.export.artifact import export_checkpoint, export_model
from recsys.serving.artifact import ArtifactError, ServedModel, features
from recsys.tables import spec_from_mapping
from recsys.train.compaction import serving_model
from recsys.train.config import TrainConfig
from recsys.train.job import Job
from recsys.train.loop import train
from tests.train.conftest import SMALL_MODEL

TABLES = {
    "full": {"strategy": "full"},
    "hashing": {"strategy": "hashing", "compression": 10},
    "qr": {"strategy": "qr", "compression": 10},
    "unified": {"strategy": "unified", "compression": 10},
    "mixed_dim": {"strategy": "mixed_dim", "compression": 2},
}


def raw_rows(path, count: int = 200) -> list[dict]:
    """The first rows of a Criteo-format file as JSON objects (empty fields as null)."""
    names = ["label", *(f"I{index}" for index in range(1, 14)), *(f"C{index}" for index in range(1, 27))]
    lines = path.read_text().splitlines()[:count]
    return [dict(zip(names, (value or None for value in line.split("\t")))) for line in lines]


@pytest.fixture(scope="module", params=sorted(TABLES))
def exported(request, synthetic_cache, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=512, progress=False)
    job = Job(synthetic_cache, spec_from_mapping(TABLES[request.param]), "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    directory = tmp_path_factory.mktemp("artifact") / "model"
    export_model(job, serving_model(job, result.model), directory, result.metrics)
    return result, directory


def test_served_predictions_equal_the_trained_models(exported, synthetic_file):
    result, directory = exported
    served = ServedModel.load(directory)
    rows = raw_rows(synthetic_file)
    encoded = served.encoder.encode(rows)
    with torch.no_grad():
        trained = torch.sigmoid(result.model(torch.from_numpy(encoded.dense), features(encoded)))
    torch.testing.assert_close(served.predict(rows), trained, atol=1e-6, rtol=0)


def test_the_artifact_loads_in_a_process_without_training_code(exported, synthetic_file, tmp_path):
    _, directory = exported
    rows = raw_rows(synthetic_file, 20)
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = (
        "import json, sys; from recsys.serving.artifact import ServedModel; "
        f"model = ServedModel.load({str(directory)!r}); "
        f"print(json.dumps(model.predict(json.load(open({str(tmp_path / 'rows.json')!r}))).tolist())); "
        "print(sorted(m for m in sys.modules if m == 'polars' or m.startswith(('recsys.train', 'mlflow'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert output[-1] == "[]"
    expected = ServedModel.load(directory).predict(rows)
    torch.testing.assert_close(torch.tensor(json.loads(output[-2])), expected, atol=1e-6, rtol=0)


def test_an_altered_artifact_is_refused(exported, tmp_path):
    _, directory = exported
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(directory), str(copy)], check=True)
    data = bytearray((copy / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        ServedModel.load(copy)
    with pytest.raises(ArtifactError, match="not an exported model"):
        ServedModel.load(tmp_path)


def test_a_checkpoint_exports_the_model_it_holds(synthetic_cache, synthetic_file, tmp_path):
    config = TrainConfig(epochs=1, batch_size=512, progress=False, checkpoint_dir=str(tmp_path / "checkpoints"))
    job = Job(synthetic_cache, spec_from_mapping(TABLES["hashing"]), "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    served = ServedModel.load(export_checkpoint(tmp_path / "checkpoints", tmp_path / "model"))
    encoded = served.encoder.encode(raw_rows(synthetic_file, 50))
    with torch.no_grad():
        trained = torch.sigmoid(result.model(torch.from_numpy(encoded.dense), features(encoded)))
    torch.testing.assert_close(served.predict_encoded(encoded), trained, atol=1e-6, rtol=0)
    assert served.manifest["metrics"]["val/auc"] == pytest.approx(result.metrics["val/auc"])


def test_the_export_command_writes_an_artifact_and_refuses_pruned_tables(synthetic_cache, tmp_path, capsys):
    for strategy, tables in (("full", TABLES["full"]), ("pruned", {"strategy": "pruned", "compression": 2})):
        checkpoints = tmp_path / strategy
        config = TrainConfig(epochs=1, batch_size=4096, progress=False, checkpoint_dir=str(checkpoints))
        train(Job(synthetic_cache, spec_from_mapping(tables), "dlrm", config, dict(SMALL_MODEL)))
        code = main(["export", str(checkpoints), "-o", str(tmp_path / f"{strategy}-model")])
        if strategy == "full":
            assert code == 0 and ServedModel.load(tmp_path / "full-model").manifest["tables"]["strategy"] == "full"
        else:
            assert code == 2 and "pruned tables" in capsys.readouterr().err
            assert not (tmp_path / "pruned-model").exists()
