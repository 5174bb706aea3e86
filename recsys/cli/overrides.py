"""`recsys train --set SECTION.KEY=VALUE`: any setting an experiment file can give, for one run.

`model.dropout=0.2` sets a field of the model's config ([models.<name>] in an experiment file),
`tables.init_std=0.01` a key of the table spec (over the --tables file), `train.lr_decay=0.5` a
training setting (most also have an option of their own). VALUE is a TOML value (`0.2`, `true`,
`[400, 400]`, `"sum"`); a bare word is taken as a string. `models.<name>.KEY` (an experiment file's
spelling) is `model.KEY` for the model trained, and refused for another model. Each section is checked like its TOML
table: an unknown key or a wrong type is an error naming it.
"""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("model", "tables", "train")


def parsed_setting(text: str) -> tuple[str, str, Any]:
    """(section, key, value) of one `--set SECTION.KEY=VALUE`."""
    name, equals, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if section == "models" and key.count(".") == 1 and not key.startswith("."):  # models.deepfm.dropout
        model, _, key = key.partition(".")
        section = f"model:{model.strip()}"
    if not equals or not dot or not key or section.partition(":")[0] not in SECTIONS:
        raise argparse.ArgumentTypeError(
            f"expected SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)} (e.g. model.dropout=0.2, or "
            "models.deepfm.dropout=0.2), "
            f"got {text!r}"
        )
    return section, key.strip(), toml_value(raw.strip())


def toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


@dataclass
class Overrides:
    """The `--set` settings by section, later ones winning."""

    model: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)
    """The model names of `models.<name>.KEY` settings (each must be the model trained)."""

    @classmethod
    def of(cls, settings: list[tuple[str, str, Any]] | None) -> Overrides:
        overrides = cls()
        for section, key, value in settings or []:
            section, _, model = section.partition(":")
            if model:
                overrides.models.add(model)
            getattr(overrides, section)[key] = value
        return overrides

    def check_model(self, model: str) -> None:
        """Refuse `models.<name>.KEY` settings for a model other than `model`."""
        others = sorted(self.models - {model})
        if others:
            raise ValueError(
                f"--set models.{others[0]}.KEY sets the {others[0]} model but --model is {model}: use "
                f"models.{model}.KEY or model.KEY"
            )
