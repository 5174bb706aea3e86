"""Experiment files: what a sweep runs, checked, and expanded into configurations.

An experiment file (experiments/<name>.toml) names the data, the grid and short overrides:

    [data]                      synthetic_rows = 1_000_000 (and cardinality_scale, data_seed),
                                or raw = ["file.tsv", ...] with format = "criteo" (the default), "avazu",
                                "frappe" or "movielens" (a directory), or prepared = "cache/"
                                (paths relative to the experiment file)
    [grid]                      models, strategies, compressions (for every strategy but full), seeds
    [train]                     TrainConfig fields (epochs, batch_size, ...)
    [tables]                    spec keys every strategy shares (embedding_dim, init_std)
    [tables.<strategy>]         extra spec keys for a strategy; [tables."<strategy>@<compression>"] for one budget
    [models.<model>]            model config overrides
    [tune]                      what `recsys tune` searches: model, strategy, compression, trials and
                                [tune.space] (see recsys/sweep/space.py); a sweep ignores it

Each configuration is identified by a hash of its resolved settings (`Configuration.config_hash`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys.config import ConfigError, from_mapping, read_toml
from recsys.data.formats import FORMATS
from recsys.models import MODELS
from recsys.tables import STRATEGIES, spec_from_mapping
from recsys.tables.spec import TableSpec
from recsys.train.config import PLATEAU_FACTOR, TrainConfig

SECTIONS = ("name", "data", "grid", "train", "tables", "models", "tune")


@dataclass(frozen=True)
class DataSpec:
    synthetic_rows: int | None = None
    cardinality_scale: float = 1.0
    data_seed: int = 0
    raw: tuple[str, ...] = ()
    format: str = "criteo"
    """The format of the `raw` files: a name in `recsys.data.formats.FORMATS`."""
    prepared: str | None = None
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    test: tuple[str, ...] = ()
    """Raw files read after `raw` as the whole test split (`split` then needs a test part of 0)."""
    shuffle: int | None = None
    """Shuffle the raw rows with this seed before the split (`recsys data prepare --shuffle`)."""

    def __post_init__(self) -> None:
        given = [name for name in ("synthetic_rows", "raw", "prepared") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of synthetic_rows, raw or prepared; got {', '.join(given) or 'none'}")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; known formats: {', '.join(FORMATS)}")
        if self.test and not self.raw:
            raise ValueError("test = [...] gives raw test files: it needs raw = [...] too")
        if self.shuffle is not None and not 0 <= self.shuffle < 2**64:
            raise ValueError(f"shuffle: the seed must be a whole number from 0 to 2**64 - 1, got {self.shuffle}")
        if self.format != "criteo" and not self.raw:
            raise ValueError(f"format = {self.format!r} describes raw files; give them as raw = [...]")

    def identity(self) -> dict[str, Any]:
        """The settings that define the data (Criteo, the first format, no test files and no shuffle are left
        implicit: older hashes hold)."""
        settings = json.loads(json.dumps(asdict(self)))
        if settings["format"] == "criteo":
            del settings["format"]
        for name in ("test", "shuffle"):
            if settings[name] in ((), [], None):
                del settings[name]
        return settings


@dataclass(frozen=True)
class GridSpec:
    models: tuple[str, ...] = ("dlrm",)
    strategies: tuple[str, ...] = ("full", "hashing")
    compressions: tuple[float, ...] = (10,)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for kind, names, known in (("model", self.models, MODELS), ("strategy", self.strategies, STRATEGIES)):
            unknown = [name for name in names if name.split("@")[0] not in known]
            if unknown:
                raise ValueError(f"unknown {kind} {', '.join(unknown)}; known: {', '.join(known)}")
        if not self.seeds:
            raise ValueError("give at least one seed")


@dataclass(frozen=True)
class Experiment:
    name: str
    data: DataSpec
    grid: GridSpec
    train: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    """Spec keys of every strategy (scalars), and per strategy or budget (tables)."""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    """The [tune] table, read by `recsys tune` (recsys/sweep/tune.py)."""


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; every error names the file and the key."""
    path = Path(path)
    values = read_toml(path)
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    train = dict(values.get("train", {}))
    from_mapping(TrainConfig, train, f"{path} [train]")  # checked now, used per configuration
    data = dict(values.get("data", {}))
    for key in ("raw", "prepared", "test"):  # relative to the experiment file, wherever the sweep runs from
        if isinstance(data.get(key), list):
            data[key] = [str(path.parent / name) for name in data[key]]
        elif isinstance(data.get(key), str):
            data[key] = str(path.parent / data[key])
    return Experiment(
        name=values.get("name", path.stem),
        data=from_mapping(DataSpec, data, f"{path} [data]"),
        grid=from_mapping(GridSpec, values.get("grid", {}), f"{path} [grid]"),
        train=train,
        tables={
            key: dict(value) if isinstance(value, dict) else value for key, value in values.get("tables", {}).items()
        },
        models={key: dict(value) for key, value in values.get("models", {}).items()},
        tune=dict(values.get("tune", {})),
    )


@dataclass(frozen=True)
class Configuration:
    """One run of a sweep: model, table spec and seed, with everything resolved."""

    model: str
    model_overrides: dict[str, Any]
    spec: TableSpec
    compression: float | None
    seed: int
    train: dict[str, Any]

    @property
    def train_config(self) -> TrainConfig:
        settings = {"progress": False, **self.train, "seed": self.seed}
        return from_mapping(TrainConfig, settings, f"configuration {self.label}")

    @property
    def label(self) -> str:
        budget = "" if self.compression is None else f"-{self.compression:g}x"
        return f"{self.model}/{self.spec.strategy}{budget}/seed{self.seed}"

    def config_hash(self, data: DataSpec) -> str:
        train = {**self.train, "seed": self.seed}
        if train.get("patience") is not None and "lr_decay" not in train:
            train["lr_decay"] = PLATEAU_FACTOR  # the cut --patience came to imply: older runs trained without it
        settings = {
            "data": data.identity(),
            "model": [self.model, self.model_overrides],
            "tables": self.spec.to_dict(),
            "train": train,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def table_spec(
    experiment: Experiment, strategy: str, compression: float | None, extra: dict[str, Any] | None = None
) -> TableSpec:
    """The spec of `strategy` at `compression`: shared keys, then the strategy's, the budget's and `extra`."""
    where = f"experiment {experiment.name!r} tables of {strategy}"
    return spec_from_mapping(table_keys(experiment, strategy, compression, extra), where=where)


def table_keys(
    experiment: Experiment, strategy: str, compression: float | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The table-spec keys the experiment gives one strategy and budget (later ones winning), `extra` last."""
    values: dict[str, Any] = {"strategy": strategy}
    if compression is not None:
        values["compression"] = compression
    values.update({key: value for key, value in experiment.tables.items() if not isinstance(value, dict)})
    values.update(experiment.tables.get(strategy, {}))
    if compression is not None:
        values.update(experiment.tables.get(f"{strategy}@{compression:g}", {}))
    values.update(extra or {})
    return values


def configurations(experiment: Experiment) -> list[Configuration]:
    """The grid, expanded: full once per model and seed, every other strategy at every compression."""
    found = []
    for model in experiment.grid.models:
        for strategy in experiment.grid.strategies:
            budgets = [None] if strategy == "full" else list(experiment.grid.compressions)
            for compression in budgets:
                spec = table_spec(experiment, strategy, compression)
                for seed in experiment.grid.seeds:
                    found.append(
                        Configuration(
                            model, dict(experiment.models.get(model, {})), spec, compression, seed, experiment.train
                        )
                    )
    return found
