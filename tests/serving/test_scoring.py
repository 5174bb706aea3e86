"""`recsys predict`: raw files scored through an artifact, the same scores as its served predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.export.artifact import export_model
from recsys.serving.artifact import ServedModel
from recsys.serving.scoring import ScoringOptions, score_files
from recsys.tables import spec_from_mapping
from recsys.train.config import TrainConfig
from recsys.train.finished import finished_model
from recsys.train.job import Job
from recsys.train.loop import train
from recsys.train.metrics import log_loss, roc_auc
from tests.export.test_artifact import raw_rows
from tests.train.conftest import SMALL_MODEL


@pytest.fixture(scope="module")
def artifact(synthetic_cache, tmp_path_factory):
    config = TrainConfig(epochs=1, batch_size=4096, progress=False)
    spec = spec_from_mapping({"strategy": "hashing", "compression": 10})
    job = Job(synthetic_cache, spec, "dlrm", config, dict(SMALL_MODEL))
    result = train(job)
    directory = tmp_path_factory.mktemp("scoring") / "model"
    return export_model(finished_model(job, result.model, result.metrics), directory)


@pytest.fixture(scope="module")
def head_file(synthetic_file, tmp_path_factory):
    """The first 3,000 rows of the synthetic file."""
    path = tmp_path_factory.mktemp("head") / "head.tsv"
    path.write_text("".join(synthetic_file.read_text().splitlines(keepends=True)[:3000]))
    return path


def test_scores_equal_the_served_predictions_of_the_same_raw_rows(artifact, head_file, tmp_path):
    served = ServedModel.load(artifact)
    result = score_files(served, [head_file, head_file], tmp_path / "scores.parquet", ScoringOptions(batch_rows=700))
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    assert result.rows == len(scores) == 6000 and scores.columns == ["file", "line", "score", "label"]
    assert scores["line"].to_list() == list(range(1, 3001)) * 2
    expected = served.predict(raw_rows(head_file, 3000)).numpy()
    np.testing.assert_allclose(scores["score"].to_numpy()[:3000], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(scores["score"].to_numpy()[3000:], expected, atol=1e-6, rtol=0)
    labels = np.array([float(line.split("\t")[0]) for line in head_file.read_text().splitlines()] * 2)
    np.testing.assert_array_equal(scores["label"].to_numpy(), labels)
    assert result.metrics["auc"] == pytest.approx(roc_auc(scores["score"].to_numpy(), labels))
    assert result.metrics["logloss"] == pytest.approx(log_loss(scores["score"].to_numpy(), labels))


def test_unlabeled_files_score_the_same(artifact, head_file, tmp_path):
    served = ServedModel.load(artifact)
    unlabeled = tmp_path / "test.tsv"
    unlabeled.write_text("".join(line.split("\t", 1)[1] for line in head_file.read_text().splitlines(keepends=True)))
    labelled = score_files(served, [head_file], tmp_path / "a.parquet")
    result = score_files(served, [unlabeled], tmp_path / "b.parquet", ScoringOptions(labelled=False))
    scores = pl.read_parquet(tmp_path / "b.parquet")
    assert "label" not in scores.columns and result.metrics == {}
    expected = pl.read_parquet(tmp_path / "a.parquet")["score"]
    torch.testing.assert_close(scores["score"].to_torch(), expected.to_torch(), atol=0, rtol=0)
    assert labelled.metrics["rows"] == 3000


@pytest.mark.parametrize("value", [b"not-hex", b"ab\xff\xfe"], ids=["not-hex", "not-utf8"])
def test_a_bad_row_stops_with_its_line_and_leaves_nothing_or_is_skipped_and_counted(
    artifact, head_file, tmp_path, value
):
    served = ServedModel.load(artifact)
    lines = head_file.read_bytes().splitlines(keepends=True)
    fields = lines[1500].split(b"\t")
    fields[20] = value
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"".join([*lines[:1500], b"\t".join(fields), *lines[1501:]]))
    output = tmp_path / "scores.parquet"
    with pytest.raises(ValueError, match=r"bad\.tsv:1501: C7"):
        score_files(served, [bad], output)
    assert list(tmp_path.iterdir()) == [bad]
    result = score_files(served, [bad], output, ScoringOptions(skip_bad_rows=True))
    assert result.rows == 2999 and result.bad_rows["skipped"] == 1
    assert 1501 not in pl.read_parquet(output)["line"].to_list()


def test_the_predict_command_prints_and_records_the_evaluation(artifact, head_file, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    output = tmp_path / "scores.parquet"
    command = ["predict", str(artifact), str(head_file), "-o", str(output), "--no-progress"]
    assert main([*command, "--evaluate", "--tracking-uri", uri, "--experiment", "next-day"]) == 0
    printed = capsys.readouterr().out
    auc = roc_auc(pl.read_parquet(output)["score"].to_numpy(), pl.read_parquet(output)["label"].to_numpy())
    assert f"auc: {auc:.6g}" in printed
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("next-day").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["predict/auc"] == pytest.approx(auc)
    assert runs[0].data.params["strategy"] == "hashing"
    assert main([*command, "--evaluate", "--unlabeled"]) == 2
    assert "--evaluate needs labels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(["predict", str(artifact), str(tmp_path / "missing.tsv"), "-o", str(output)])
    assert stopped.value.code == 2 and "argument files" in capsys.readouterr().err


def test_a_movielens_directory_is_scored_whole_and_a_file_in_it_is_refused(bag_cache, tmp_path):
    config = TrainConfig(epochs=1, batch_size=512, progress=False)
    job = Job(bag_cache, spec_from_mapping({"strategy": "full"}), "deepfm", config, {})
    result = train(job)
    served = ServedModel.load(export_model(finished_model(job, result.model), tmp_path / "model"))
    directory = Path(bag_cache.meta["sources"][0]["path"])
    scored = score_files(served, [directory], tmp_path / "scores.parquet")
    assert scored.rows == sum(bag_cache.rows(split) for split in ("train", "val", "test"))
    assert 0.5 < scored.metrics["auc"] <= 1
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    assert scores.columns == ["file", "line", "score", "label"]
    assert set(scores["file"]) == {str(directory / "ratings.csv")}
    ratings = (directory / "ratings.csv").read_text().splitlines()  # line 1 is the header
    assert sorted(scores["line"]) == list(range(2, len(ratings) + 1))
    clicks = [float(float(ratings[line - 1].split(",")[2]) >= 4) for line in scores["line"]]
    assert scores["label"].to_list() == clicks  # each score joins back to its own input line
    with pytest.raises(ValueError, match="MovieLens is scored by directory"):
        score_files(served, [directory / "ratings.csv"], tmp_path / "again.parquet")
    assert not (tmp_path / "again.parquet").exists()
