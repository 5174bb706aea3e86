"""An exported model loads without the training code and predicts from raw rows what the trained model predicts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from recsys.checksums import checksums
from recsys.cli import main
from recsys.export.artifact import export_model
from recsys.export.format import ArtifactError
from recsys.serving.artifact import ServedModel, features
from recsys.tables import spec_from_mapping
from recsys.train.checkpoint import reported_checkpoint
from recsys.train.config import TrainConfig
from recsys.train.finished import finished_model, finished_model_of_checkpoint
from recsys.train.job import Job
from recsys.train.loop import train
from tests.conftest import EXPORTED_TABLES, modules_loaded_by
from tests.train.conftest import SMALL_MODEL

LEARNED_INDEXES = ("pruned", "graphhash", "optembed")
"""Strategies whose serving form keeps learned id maps in its state and is rebuilt from a recorded shape."""


def raw_rows(path, count: int = 200) -> list[dict]:
    """The first rows of a Criteo-format file as JSON objects (empty fields as null)."""
    names = ["label", *(f"I{index}" for index in range(1, 14)), *(f"C{index}" for index in range(1, 27))]
    lines = path.read_text().splitlines()[:count]
    return [dict(zip(names, (value or None for value in line.split("\t")))) for line in lines]


def test_served_predictions_equal_the_trained_models(exported, synthetic_file):
    result, directory, _ = exported
    served = ServedModel.load(directory)
    rows = raw_rows(synthetic_file)
    encoded = served.encoder.encode(rows)
    with torch.no_grad():
        trained = torch.sigmoid(result.model(torch.from_numpy(encoded.dense), features(encoded)))
    torch.testing.assert_close(served.predict(rows), trained, atol=1e-6, rtol=0)


def test_the_artifact_loads_in_a_process_without_training_code(exported, synthetic_file, tmp_path):
    _, directory, _ = exported
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
    _, directory, _ = exported
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(directory), str(copy)], check=True)
    data = bytearray((copy / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        ServedModel.load(copy)
    with pytest.raises(ArtifactError, match="not an exported model"):
        ServedModel.load(tmp_path)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_quantized_tables_serve_close_to_fp32_and_record_what_they_cost(exported, synthetic_file, tmp_path, precision):
    result, directory, job = exported
    if job.spec.strategy == "dhe":  # no table: its decoder is served in fp32 only
        with pytest.raises(ValueError, match="dhe has no table to quantize to .*: export it without --quantize"):
            export_model(finished_model(job, result.model), tmp_path / precision, precision=precision)
        assert not (tmp_path / precision).exists()
        return
    quantized = export_model(finished_model(job, result.model), tmp_path / precision, precision=precision)
    served, exact = ServedModel.load(quantized), ServedModel.load(directory)
    rows = raw_rows(synthetic_file)
    difference = (served.predict(rows) - exact.predict(rows)).abs()
    assert 0 < difference.max() < 0.02
    manifest = served.manifest
    report = manifest["quantization"]
    assert manifest["precision"] == precision and report["precision"] == precision
    assert report["fp32"]["auc"] == pytest.approx(result.metrics["test/auc"], abs=1e-6)
    assert abs(report["auc_change"]) < 0.01
    assert report["auc_change"] == pytest.approx(report["quantized"]["auc"] - report["fp32"]["auc"])
    row_bytes = {"int8": lambda dim: dim + 4, "fp16": lambda dim: 2 * dim}[precision]  # int8: fp16 scale and bias
    expected = sum(
        config.num_embeddings * -(-row_bytes(config.embedding_dim) // 4) * 4  # rows padded to 4 bytes
        for config in served.model.lookup.table_configs()
    )
    assert manifest["memory"]["table_bytes"] == expected < exact.manifest["memory"]["table_bytes"] / 1.9
    assert (quantized / "model.pt").stat().st_size < (directory / "model.pt").stat().st_size


def test_a_checkpoint_exports_the_model_it_holds(synthetic_cache, synthetic_file, tmp_path):
    config = TrainConfig(epochs=1, batch_size=512, progress=False, checkpoint_dir=str(tmp_path / "checkpoints"))
    job = Job(synthetic_cache, spec_from_mapping(EXPORTED_TABLES["hashing"]), "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    served = ServedModel.load(export_model(finished_model_of_checkpoint(tmp_path / "checkpoints"), tmp_path / "model"))
    encoded = served.encoder.encode(raw_rows(synthetic_file, 50))
    with torch.no_grad():
        trained = torch.sigmoid(result.model(torch.from_numpy(encoded.dense), features(encoded)))
    torch.testing.assert_close(served.predict_encoded(encoded), trained, atol=1e-6, rtol=0)
    assert served.manifest["metrics"]["val/auc"] == pytest.approx(result.metrics["val/auc"])


def test_the_export_command_writes_an_artifact_of_the_compact_form(synthetic_cache, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    config = TrainConfig(epochs=1, batch_size=4096, progress=False, checkpoint_dir=str(checkpoints))
    result = train(
        Job(synthetic_cache, spec_from_mapping(EXPORTED_TABLES["pruned"]), "dlrm", config, dict(SMALL_MODEL))
    )
    assert main(["export", str(checkpoints), "-o", str(tmp_path / "model")]) == 0
    served = ServedModel.load(tmp_path / "model")
    report = served.model.lookup.memory_report()
    assert served.manifest["tables"]["strategy"] == "pruned" and report.compression >= 10
    assert report.total_bytes == result.metrics["compact/table/total_bytes"]


def test_export_refuses_a_directory_without_checkpoints(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "-o", str(tmp_path / "model")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def fake_checkpoint(directory, epoch: int, patience: int | None, best_epoch: int) -> None:
    """The progress file of a complete checkpoint (all `reported_checkpoint` reads)."""
    path = directory / f"epoch-{epoch:04d}"
    path.mkdir(parents=True)
    progress = {"epoch": epoch, "patience": patience, "early_stopping": {"best_epoch": best_epoch}}
    (path / "progress.json").write_text(json.dumps(progress))
    (path / "checksums.json").write_text(json.dumps(checksums(path, ["progress.json"])))


@pytest.mark.parametrize(("patience", "expected"), [(2, "epoch-0002"), (None, "epoch-0004")])
def test_the_best_epoch_is_exported_when_early_stopping_chose_one(tmp_path, patience, expected):
    for epoch in range(1, 5):
        fake_checkpoint(tmp_path, epoch, patience, best_epoch=2)
    assert reported_checkpoint(tmp_path) == tmp_path / expected
    assert reported_checkpoint(tmp_path / "epoch-0003") == tmp_path / "epoch-0003"


def test_a_best_epoch_whose_checkpoint_is_gone_is_not_replaced_by_the_last(tmp_path):
    for epoch in (1, 3):
        fake_checkpoint(tmp_path, epoch, patience=2, best_epoch=2)
    with pytest.raises(FileNotFoundError, match="early stopping chose epoch 2, whose checkpoint epoch-0002 is gone"):
        reported_checkpoint(tmp_path)


def test_each_vocabulary_is_stored_once(exported):
    """In statistics.pt (rebuilt into the tables at load) or, for forms rebuilt from their shape alone
    (pruned's and optembed's kept ids, graphhash's maps), in model.pt."""
    _, directory, _ = exported
    state = torch.load(directory / "model.pt", weights_only=True)
    in_state = [key for key in state if key.endswith("vocabularies.ids")]
    manifest = json.loads((directory / "manifest.json").read_text())
    recorded = manifest["statistics"]["vocabularies"]
    assert not (in_state and recorded), (in_state, recorded)
    assert bool(in_state) == (manifest["tables"]["strategy"] in LEARNED_INDEXES)
    assert (manifest.get("table_shape") is not None) == (manifest["tables"]["strategy"] in LEARNED_INDEXES)


def test_export_and_serving_import_no_training_code():
    statement = "import recsys.export.artifact, recsys.export.quantization, recsys.serving.artifact"
    assert modules_loaded_by(statement, ("recsys.train",)) == []
