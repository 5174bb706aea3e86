"""The demo end to end on a small synthetic set: a tracked sweep with its report, and a rerun that
reuses the data and skips what finished."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from recsys.cli.demo import EXPERIMENT, DemoOptions, run
from recsys.sweep.runner import PARENT_TAG


def test_demo_sweeps_reports_and_reuses_its_data(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = DemoOptions(workdir=tmp_path / "demo", rows=12_000, cardinality_scale=0.001, tracking_uri=uri)
    rows = run(options)
    printed = capsys.readouterr().out
    assert {(row.strategy, row.budget) for row in rows} == {("full", "full"), ("hashing", "10x"), ("hashing", "100x")}
    by_budget = {row.budget: row for row in rows}
    assert by_budget["full"].total_bytes > by_budget["10x"].total_bytes > by_budget["100x"].total_bytes
    for row in rows:
        assert f"| dlrm | {row.strategy} | {row.budget} | 1 | {row.auc[0]:.4f}" in printed
        assert 0.0 <= row.auc[0] <= 1.0  # learning itself is tested in tests/train
    assert f"mlflow ui --backend-store-uri {uri}" in printed
    assert (tmp_path / "demo" / "results" / EXPERIMENT / "pareto_dlrm.png").stat().st_size > 10_000
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(run for run in runs if run.data.tags.get(PARENT_TAG) == "true")
    assert len(runs) == 4 and parent.data.metrics["sweep/best_test_auc"] == max(row.auc[0] for row in rows)
    assert "report/pareto_dlrm.png" in {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    assert run(options) == rows  # nothing trained again: the same figures, read back from MLflow
    printed = capsys.readouterr().out
    assert "reusing the prepared data" in printed and len(client.search_runs([experiment.experiment_id])) == 4
