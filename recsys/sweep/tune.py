"""`recsys tune`: search an experiment's settings with Optuna, each trial an MLflow child run.

    experiment "frappe"
      parent run "frappe tune deepfm/full"   (tag recsys.tune_parent; the best cell's file as an artifact)
        child "trial 0: deepfm/full/seed0", ...   (tags recsys.trial, tune.<setting> per drawn value)

Optuna's TPE sampler (Bergstra et al., NeurIPS 2011) draws each trial's settings from the space
(recsys/sweep/space.py); the median pruner stops a trial whose validation AUC after an epoch (from
epoch `prune_after` on, default 3) is below the median of earlier trials' at that epoch (recorded
KILLED, tag recsys.pruned). A trial scores its run's validation AUC (the best epoch's under
`patience`); its test metrics are recorded like any run's but never choose. A trial that fails is
recorded (FAILED, tag recsys.error) and the search goes on. The best trial is written as a one-cell
experiment file, which `recsys sweep` runs at every seed of the original grid.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from recsys.config import ConfigError, from_mapping, to_toml, toml_value
from recsys.models import MODELS
from recsys.sweep.data import DEFAULT_ROOT, prepared_cache
from recsys.sweep.runner import own_checkpoints
from recsys.sweep.space import Dimension, Values, parse_space, values_of
from recsys.sweep.spec import Configuration, DataSpec, Experiment, load_experiment, table_keys, table_spec
from recsys.tracking import MLflowTracker, connect, resolve_tracking_uri
from recsys.train.events import Broadcast, Listener
from recsys.train.job import Job
from recsys.train.loop import train

PARENT_TAG = "recsys.tune_parent"
ERROR_TAG = "recsys.error"
TUNE_KEYS = ("model", "strategy", "compression", "trials", "prune_after", "space")
PRUNE_AFTER = 3
"""The first epoch at which a trial may be pruned: earlier validation AUCs say little of the best epoch's
(a small learning rate with strong weight decay starts slowly and ends ahead)."""


@dataclass(frozen=True)
class Target:
    """The cell a search tunes: model, strategy and budget, at the experiment's first seed."""

    model: str
    strategy: str
    compression: float | None
    seed: int

    @property
    def label(self) -> str:
        budget = "" if self.compression is None else f"-{self.compression:g}x"
        return f"{self.model}/{self.strategy}{budget}"


@dataclass
class TrialResult:
    number: int
    values: dict[str, Any]
    validation_auc: float | None
    state: str
    """finished, pruned (at an epoch) or failed."""
    seconds: float

    def line(self, best: TrialResult | None) -> str:
        drawn = ", ".join(f"{name}={format_value(value)}" for name, value in self.values.items())
        score = "" if self.validation_auc is None else f"val AUC {self.validation_auc:.4f}, "
        leader = f"; best {best.validation_auc:.4f} (trial {best.number})" if best else ""
        return f"trial {self.number}: {self.state}, {score}{self.seconds:.0f} s: {drawn}{leader}"


@dataclass
class TuneOutcome:
    parent_run_id: str
    trials: list[TrialResult] = field(default_factory=list)
    best: TrialResult | None = None
    output: Path | None = None


def format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def target_of(experiment: Experiment, model: str | None, strategy: str | None, compression: float | None) -> Target:
    """The tuned cell: the options, else [tune], else the grid's first model, strategy and budget."""
    unknown = sorted(set(experiment.tune) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"[tune]: unknown key(s) {', '.join(unknown)}; known: {', '.join(TUNE_KEYS)}")
    model = model or experiment.tune.get("model") or experiment.grid.models[0]
    strategy = strategy or experiment.tune.get("strategy") or experiment.grid.strategies[0]
    if model not in MODELS:
        raise ConfigError(f"[tune] model: unknown model {model!r}; known models: {', '.join(MODELS)}")
    if strategy == "full":
        compression = None
    else:
        compression = (
            compression or experiment.tune.get("compression") or next(iter(experiment.grid.compressions), None)
        )
        if not isinstance(compression, (int, float)) or isinstance(compression, bool) or compression <= 0:
            raise ConfigError(f"[tune] compression: give the budget of {strategy} as a positive number")
    return Target(model, strategy, compression, experiment.grid.seeds[0])


def configuration_of(experiment: Experiment, target: Target, values: Values) -> Configuration:
    """The trial's configuration: the experiment's settings for the target cell, the drawn values over them."""
    spec = table_spec(experiment, target.strategy, target.compression, values.tables)
    overrides = {**experiment.models.get(target.model, {}), **values.model}
    return Configuration(
        target.model, overrides, spec, target.compression, target.seed, {**experiment.train, **values.train}
    )


def check_space(experiment: Experiment, target: Target, dimensions: list[Dimension]) -> None:
    """Build the configuration at every value a dimension can take to its ends (each choice, both bounds;
    the others at their first): an unknown key or a wrong type fails now, not in some trial."""
    first = [dimension.first() for dimension in dimensions]
    for index, dimension in enumerate(dimensions):
        for value in dimension.extremes():
            drawn = [*first[:index], value, *first[index + 1 :]]
            configuration = configuration_of(experiment, target, values_of(dimensions, drawn))
            configuration.train_config  # noqa: B018 (checks the [train] keys)
            model_config = MODELS[target.model].config_type
            from_mapping(model_config, configuration.model_overrides, f"[tune.space] model {target.model}")


class Pruning(Listener):
    """Reports each epoch's validation AUC to the trial; raises TrialPruned when the pruner says so."""

    def __init__(self, trial) -> None:
        self.trial = trial
        self.pruned_at: int | None = None

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        import optuna

        if "val/auc" not in metrics or "epoch" not in metrics or "stopped_epoch" in metrics:
            return
        epoch = int(metrics["epoch"])
        self.trial.report(metrics["val/auc"], epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise optuna.TrialPruned(f"validation AUC {metrics['val/auc']:.4f} at epoch {epoch}")


@dataclass
class Search:
    """One tuning run: the experiment, its cache, the tuned cell, the space and the MLflow parent."""

    experiment: Experiment
    target: Target
    dimensions: list[Dimension]
    cache: Any
    uri: str
    parent: str
    outcome: TuneOutcome

    def objective(self, trial) -> float:
        import optuna

        values = values_of(self.dimensions, [dimension.draw(trial) for dimension in self.dimensions])
        tags = {"recsys.trial": str(trial.number), **{f"tune.{k}": str(v) for k, v in values.flat().items()}}
        run_name = f"trial {trial.number}: {self.target.label}/seed{self.target.seed}"
        tracker = MLflowTracker(self.uri, self.experiment.name, run_name, parent_run_id=self.parent, extra_tags=tags)
        pruning = Pruning(trial)
        started = time.perf_counter()
        try:
            result = train(self.job(trial.number, values), Broadcast([tracker, pruning]))
        except optuna.TrialPruned:
            tracker.client.set_terminated(tracker.run_id, status="KILLED")
            tracker.client.set_tag(tracker.run_id, "recsys.pruned", str(pruning.pruned_at))
            self.record(trial.number, values, None, f"pruned at epoch {pruning.pruned_at}", started)
            raise
        except Exception as error:  # recorded; Optuna marks the trial failed and the search goes on
            message = f"{type(error).__name__}: {error}"
            self.record_failure(tracker, tags, message)
            self.record(trial.number, values, None, f"failed ({message})"[:300], started)
            raise
        auc = result.metrics["val/auc"]
        self.record(trial.number, values, auc, "finished", started)
        return auc

    def job(self, number: int, values: Values) -> Job:
        """The trial's job; with checkpoints, in `<checkpoint_dir>/tune-<trial>/` (no two trials share one)."""
        configuration = configuration_of(self.experiment, self.target, values)
        return Job(
            cache=self.cache,
            spec=configuration.spec,
            model=configuration.model,
            config=own_checkpoints(configuration.train_config, f"tune-{number}"),
            model_overrides=dict(configuration.model_overrides),
            spec_text=to_toml(configuration.spec.to_dict()),
        )

    def record_failure(self, tracker: MLflowTracker, tags: dict[str, str], message: str) -> None:
        """Tag the trial's run with its error; a trial that failed before its run began gets a run too."""
        client = tracker.client
        if tracker.run_id is None:
            run_tags = {**tags, "mlflow.parentRunId": self.parent, "model": self.target.model}
            tracker.run_id = client.create_run(
                tracker.experiment_id, run_name=tracker.run_name, tags=run_tags
            ).info.run_id
            client.set_terminated(tracker.run_id, status="FAILED")
        client.set_tag(tracker.run_id, ERROR_TAG, message[:4000])

    def record(self, number: int, values: Values, auc: float | None, state: str, started: float) -> None:
        found = TrialResult(number, values.flat(), auc, state, time.perf_counter() - started)
        self.outcome.trials.append(found)
        finished = [item for item in self.outcome.trials if item.validation_auc is not None]
        self.outcome.best = max(finished, key=lambda item: item.validation_auc, default=None)
        tqdm.write(found.line(self.outcome.best))


def run_tune(
    path: str | Path,
    trials: int | None = None,
    output: Path | None = None,
    model: str | None = None,
    strategy: str | None = None,
    compression: float | None = None,
    tracking_uri: str | None = None,
    cache_root: Path = DEFAULT_ROOT,
    sampler_seed: int = 0,
) -> TuneOutcome:
    """Search the experiment's space for its target cell; write the best trial as a one-cell experiment."""
    import optuna

    path = Path(path)
    experiment = load_experiment(path)
    target = target_of(experiment, model, strategy, compression)
    trials = trials or setting_of(experiment, "trials", 20, minimum=1)
    prune_after = setting_of(experiment, "prune_after", PRUNE_AFTER, minimum=0)
    space = experiment.tune.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"{path} [tune] space: give a table of settings, e.g. [tune.space]")
    dimensions = parse_space(dict(space), target.model, str(path))
    check_space(experiment, target, dimensions)
    output = output or path.with_name(f"{path.stem}_tuned.toml")
    if output.exists():
        raise ConfigError(f"{output} exists; give another --output or remove it (tune does not overwrite)")
    uri = resolve_tracking_uri(tracking_uri)
    client, experiment_id = connect(uri, experiment.name)
    cache = prepared_cache(experiment.data, cache_root)
    tags = {PARENT_TAG: "true", "model": target.model, "strategy": target.strategy}
    parent = client.create_run(experiment_id, run_name=f"{experiment.name} tune {target.label}", tags=tags).info.run_id
    search = Search(experiment, target, dimensions, cache, uri, parent, TuneOutcome(parent))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials print our one line, not a traceback
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=prune_after),
    )
    status = "FAILED"
    try:
        client.log_text(parent, path.read_text(), f"experiment/{path.name}")
        with tqdm(total=trials, unit="trial", desc=f"tune {experiment.name} {target.label}") as bar:
            study.optimize(search.objective, n_trials=trials, catch=(Exception,), callbacks=[lambda *_: bar.update(1)])
        best = search.outcome.best
        if best is None:
            raise ValueError(
                f"no trial of {trials} finished (see the failed and pruned runs under MLflow run {parent})"
            )
        text = tuned_experiment(
            experiment, target, dimensions_values(best, dimensions), output, best, len(study.trials)
        )
        client.log_text(parent, text, f"tuned/{output.name}")  # kept in MLflow even if the file cannot be written
        client.log_metric(parent, "best/val_auc", best.validation_auc)
        client.set_tag(parent, "recsys.best_trial", str(best.number))
        write_new(output, text)
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status=status)
    search.outcome.output = output
    return search.outcome


def setting_of(experiment: Experiment, key: str, default: int, minimum: int) -> int:
    """An integer of [tune], checked."""
    value = experiment.tune.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"[tune] {key}: expected a whole number of at least {minimum}, got {value!r}")
    return value


def dimensions_values(best: TrialResult, dimensions: list[Dimension]) -> Values:
    return values_of(dimensions, [best.values[dimension.name] for dimension in dimensions])


def tuned_experiment(
    experiment: Experiment, target: Target, values: Values, output: Path, best: TrialResult, trials: int
) -> str:
    """The best trial as a one-cell experiment file: the original's data and seeds, the settings resolved."""
    sections = {
        "data": data_section(experiment.data, output.parent),
        "grid": {
            "models": [target.model],
            "strategies": [target.strategy],
            **({"compressions": [target.compression]} if target.compression is not None else {}),
            "seeds": list(experiment.grid.seeds),
        },
        "train": {**experiment.train, **values.train},
        f"tables.{target.strategy}": {  # every key under the strategy's table: a table-valued key stays one
            key: value
            for key, value in table_keys(experiment, target.strategy, target.compression, values.tables).items()
            if key not in ("strategy", "compression")
        },
        f"models.{target.model}": {**experiment.models.get(target.model, {}), **values.model},
    }
    header = (
        f"# The best of {trials} trials of `recsys tune` on {experiment.name} ({target.label}): validation AUC "
        f"{best.validation_auc:.4f}, trial {best.number}.\n# Drawn: "
        + ", ".join(f"{name} = {format_value(value)}" for name, value in best.values.items())
        + f"\nname = {toml_value(experiment.name + '_tuned')}\n"
    )
    body = "".join(f"\n[{name}]\n{to_toml(values)}" for name, values in sections.items() if values)
    return header + body


def data_section(data: DataSpec, directory: Path) -> dict[str, Any]:
    """The [data] settings that differ from the defaults, paths relative to the new file's directory."""
    default = DataSpec(synthetic_rows=1)
    section: dict[str, Any] = {}
    for name in data.__dataclass_fields__:
        value = getattr(data, name)
        if name in ("raw", "test") and value:
            value = [os.path.relpath(Path(item).resolve(), directory.resolve()) for item in value]
        elif name == "prepared" and value:
            value = os.path.relpath(Path(value).resolve(), directory.resolve())
        if value is not None and (value != getattr(default, name) or name == "synthetic_rows"):
            section[name] = list(value) if isinstance(value, tuple) else value
    return section


def write_new(path: Path, text: str) -> None:
    """Write `path` under a unique temporary name and rename it; refuse a file that appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    try:
        os.link(temporary, path)  # fails if `path` exists: nothing is overwritten
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise FileExistsError(f"{path} appeared while tuning; the best configuration is in MLflow") from None
        with path.open("x") as file:  # no hard links on this filesystem: still never over a file
            file.write(text)
    finally:
        temporary.unlink()
