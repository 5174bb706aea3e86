"""`recsys tune` against a real MLflow store: trials as child runs, pruning, the best cell written as
an experiment file that `recsys sweep` reproduces, and a bad space refused before anything runs."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from recsys.cli import main
from recsys.config import ConfigError
from recsys.sweep.runner import run_sweep
from recsys.sweep.space import parse_space
from recsys.sweep.spec import configurations, load_experiment
from recsys.sweep.tune import run_tune

SPACE = """
[tune.space]
"train.sparse_learning_rate" = { low = 0.01, high = 0.5, log = true }
"train.batch_size" = [1024, 4096]
"models.deepfm.hidden" = [[8], [16, 8]]
"""


def experiment_file(tmp_path, cache_path, space=SPACE, epochs=2):
    path = tmp_path / "small.toml"
    path.write_text(
        f"""
name = "small"
[data]
prepared = "{cache_path}"
[grid]
models = ["deepfm"]
strategies = ["full"]
seeds = [3, 4]
[train]
epochs = {epochs}
checkpoint_dir = "{tmp_path / "checkpoints"}"
[tables]
embedding_dim = 8
[models.deepfm]
dropout = 0.1
[tune]
{"" if space.startswith("trials") else "trials = 2"}
{space}"""
    )
    return path


def test_trials_are_child_runs_and_the_best_is_written_as_a_cell_the_sweep_reproduces(synthetic_cache, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = experiment_file(tmp_path, synthetic_cache.path)
    outcome = run_tune(path, trials=3, tracking_uri=store, cache_root=tmp_path / "cache")
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name("small").experiment_id
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    assert sorted(run.data.tags["recsys.trial"] for run in children) == ["0", "1", "2"]
    for run in children:  # each trial trained with what it drew, over the experiment's settings
        assert float(run.data.params["train.sparse_learning_rate"]) == float(
            run.data.tags["tune.train.sparse_learning_rate"]
        )
        assert run.data.params["train.seed"] == "3" and run.data.params["model.dropout"] == "0.1"
        assert run.data.params["model.hidden"] in ("[8]", "[16, 8]", "(8,)", "(16, 8)")
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["tune-0", "tune-1", "tune-2"]
    best = max(children, key=lambda run: run.data.metrics["val/auc"])
    assert outcome.best.number == int(best.data.tags["recsys.trial"])
    assert outcome.best.validation_auc == best.data.metrics["val/auc"]

    tuned = load_experiment(outcome.output)
    cells = configurations(tuned)
    assert [cell.seed for cell in cells] == [3, 4] and {cell.model for cell in cells} == {"deepfm"}
    assert cells[0].train["sparse_learning_rate"] == outcome.best.values["train.sparse_learning_rate"]
    assert cells[0].train["batch_size"] == outcome.best.values["train.batch_size"]
    assert list(cells[0].model_overrides["hidden"]) == list(outcome.best.values["model.hidden"])
    assert cells[0].model_overrides["dropout"] == 0.1 and cells[0].spec.embedding_dim == 8

    swept = run_sweep(outcome.output, store, tmp_path / "cache")
    seed_three = next(result for result in swept.results if result.seed == 3)
    assert seed_three.val_auc == outcome.best.validation_auc  # the written cell is the trial, exactly
    with pytest.raises(ConfigError, match="exists"):
        run_tune(path, trials=1, output=outcome.output, tracking_uri=store, cache_root=tmp_path / "cache")


class PruneEverything(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trials_stop_after_their_first_epoch_and_are_recorded(synthetic_cache, tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {}
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **given: settings.update(given) or PruneEverything())
    path = experiment_file(tmp_path, synthetic_cache.path, epochs=3)
    with pytest.raises(ValueError, match="no trial of 2 finished"):
        run_tune(path, tracking_uri=store, cache_root=tmp_path / "cache")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("small").experiment_id])
    trials = [run for run in runs if "recsys.trial" in run.data.tags]
    assert len(trials) == 2 and all(run.info.status == "KILLED" for run in trials)
    assert all(run.data.tags["recsys.pruned"] == "1" for run in trials)
    assert all(len(client.get_metric_history(run.info.run_id, "val/auc")) == 1 for run in trials)
    assert not (tmp_path / "small_tuned.toml").exists()
    assert settings["n_warmup_steps"] == 3  # the median pruner waits for the third epoch by default


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"optimizer.lr": {"low": 0.1, "high": 1}}, "name a setting as train.KEY"),
        ({"models.dcnv2.dropout": [0.1]}, "sets the dcnv2 model but the tuned model is deepfm"),
        ({"train.sparse_learning_rate": {"low": 0.5, "high": 0.1}}, "low < high"),
        ({"train.sparse_learning_rate": {"low": 0, "high": 0.1, "log": True}}, "low > 0 with log"),
        ({"train.sparse_learning_rate": {"low": 0.1, "high": 0.5, "step": 2}}, "give a list of choices"),
        ({"train.batch_size": []}, "at least one choice"),
        ({"train.seed": [1, 1.0]}, "choices must differ"),
        ({"model.dropout": [0.1], "models.deepfm.dropout": [0.2]}, "model.dropout is given twice"),
    ],
)
def test_a_malformed_space_is_refused_naming_the_setting(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(space, "deepfm", "small.toml")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ('"train.learning_rate" = [0.1]', "unknown key 'learning_rate'"),
        ('"model.dropout" = ["high"]', "dropout"),
        ('"tables.rowz" = [5]', "unknown key 'rowz'"),
        ('"train.batch_size" = [1024, "big"]', "batch_size"),  # the second choice, not only the first
        ('"train.epochs" = { low = 1, high = 2.5 }', "epochs"),  # a float range draws floats
        ('"train.lr_decay" = { low = 0.5, high = 1.5 }', "lr_decay"),  # the upper bound is checked too
        ("trials = 0", "[tune] trials: expected a whole number of at least 1"),
        ("prune_after = -1", "[tune] prune_after"),
        ("space = 5", "give a table of settings"),
    ],
)
def test_a_setting_the_experiment_cannot_take_fails_before_any_trial(synthetic_cache, tmp_path, capsys, space, message):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = space if not space.startswith('"') else f"[tune.space]\n{space}\n"
    path = experiment_file(tmp_path, synthetic_cache.path, space=text)
    code = main(["tune", str(path), "--tracking-uri", store, "--cache-dir", str(tmp_path / "cache")])
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if not line.startswith("warning: the machine is busy")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and lines[0].startswith("recsys tune: error: ")
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(store).get_experiment_by_name("small")
