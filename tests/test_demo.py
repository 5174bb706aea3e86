"""The demo end to end on a small synthetic set: three tracked runs, the table, cache reuse."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from recsys.cli.demo import DEMO_TABLES, EXPERIMENT, DemoOptions, run


def test_demo_trains_tracks_and_reuses_its_data(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = DemoOptions(workdir=tmp_path / "demo", rows=12_000, cardinality_scale=0.001, tracking_uri=uri)
    rows = run(options)
    printed = capsys.readouterr().out
    assert [row["tables"] for row in rows] == [name.removesuffix(".toml") for name in DEMO_TABLES]
    for row in rows:
        assert f"{row['tables']:<16}" in printed
        assert 0.0 <= row["test/auc"] <= 1.0  # learning itself is tested in tests/train
    assert rows[0]["total_bytes"] > rows[1]["total_bytes"] > rows[2]["total_bytes"]
    assert f"mlflow ui --backend-store-uri {uri}" in printed
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([experiment.experiment_id])) == 3
    run(options)
    assert "reusing" in capsys.readouterr().out
