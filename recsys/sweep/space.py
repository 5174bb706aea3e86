"""The search space of `recsys tune`: which settings a trial draws, and from what.

An experiment file's `[tune.space]` names settings as `recsys train --set` does (`train.KEY`,
`tables.KEY`, `model.KEY` or `models.<name>.KEY`), each with what to draw from:

    "train.sparse_learning_rate" = { low = 0.01, high = 0.5, log = true }   a float (log-uniform)
    "train.epochs" = { low = 2, high = 8 }                                  an integer (both bounds integers)
    "train.batch_size" = [1024, 2048, 4096]                                 one of a list (any TOML values)

Without `[tune.space]` the default space draws the table and dense learning rates, the rows'
initial scale and, for models that have it, dropout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from recsys.config import ConfigError
from recsys.models import MODELS

SECTIONS = ("train", "tables", "model")


@dataclass(frozen=True)
class Dimension:
    """One setting a trial draws: a range (float or integer, optionally log-scaled) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def key(self) -> str:
        return self.name.partition(".")[2]

    def draw(self, trial) -> Any:
        """This setting's value for an Optuna trial."""
        if self.choices:
            labels = [label_of(choice) for choice in self.choices]
            return self.choices[labels.index(trial.suggest_categorical(self.name, labels))]
        if self.is_integer:
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    @property
    def is_integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def first(self) -> Any:
        """A value from the space, to check the setting's key and type before any trial runs."""
        return self.extremes()[0]

    def extremes(self) -> list[Any]:
        """Every choice, or both bounds (as floats for a float range: what its draws are)."""
        if self.choices:
            return list(self.choices)
        return [self.low, self.high] if self.is_integer else [float(self.low), float(self.high)]


def label_of(choice: Any) -> bool | int | float | str:
    """A choice as Optuna stores categories: scalars as they are, lists and tables as JSON text (dates as
    their TOML text)."""
    return choice if isinstance(choice, (bool, int, float, str)) else json.dumps(choice, default=str)


@dataclass(frozen=True)
class Values:
    """One trial's settings by section, over the experiment's."""

    train: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        return {f"{section}.{key}": value for section in SECTIONS for key, value in getattr(self, section).items()}


def values_of(dimensions: list[Dimension], drawn: list[Any]) -> Values:
    values = Values()
    for dimension, value in zip(dimensions, drawn):
        getattr(values, dimension.section)[dimension.key] = value
    return values


def parse_space(space: dict[str, Any], model: str, where: str) -> list[Dimension]:
    """The dimensions of a `[tune.space]` table, for `model`; every error names the setting."""
    if not space:
        return default_space(model)
    dimensions = [parse_dimension(name, spec, model, f"{where} [tune.space] {name!r}") for name, spec in space.items()]
    names = [dimension.name for dimension in dimensions]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{where} [tune.space]: {twice[0]} is given twice (model.KEY and models.{model}.KEY)")
    return dimensions


def parse_dimension(name: str, spec: Any, model: str, where: str) -> Dimension:
    section, _, key = name.partition(".")
    if section == "models":
        named, _, key = key.partition(".")
        if named != model:
            raise ConfigError(f"{where}: sets the {named} model but the tuned model is {model}")
        section = "model"
    if section not in SECTIONS or not key or "." in key:
        raise ConfigError(f"{where}: name a setting as train.KEY, tables.KEY, model.KEY or models.{model}.KEY")
    name = f"{section}.{key}"
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: give at least one choice")
        labels = [label_of(choice) for choice in spec]
        if any(labels.count(label) > 1 for label in labels):  # 1, 1.0 and true are one category to Optuna
            raise ConfigError(f"{where}: choices must differ (1, 1.0 and true count as one)")
        return Dimension(name, choices=tuple(spec))
    if not isinstance(spec, dict) or set(spec) - {"low", "high", "log"} or not {"low", "high"} <= set(spec):
        raise ConfigError(f"{where}: give a list of choices or {{ low = ..., high = ..., log = true|false }}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    numbers = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in (low, high))
    if not numbers or not low < high or not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"{where}: low and high must be numbers with low < high (and low > 0 with log = true)")
    return Dimension(name, low=low, high=high, log=log)


def default_space(model: str) -> list[Dimension]:
    """Learning rates and initial scale for every model; dropout where the model has it."""
    dimensions = [
        Dimension("train.sparse_learning_rate", 0.01, 0.5, log=True),
        Dimension("train.dense_learning_rate", 1e-4, 1e-2, log=True),
        Dimension("tables.init_std", 1e-4, 0.1, log=True),
    ]
    fields = MODELS[model].config_type.__dataclass_fields__ if model in MODELS else {}
    if "dropout" in fields:
        dimensions.append(Dimension("model.dropout", 0.0, 0.5))
    return dimensions
