"""Typed configs from TOML: dataclasses whose unknown keys and wrong types are errors.

A typo in a config (`compresion = 10`) must not be ignored silently, and a value of the wrong type
must be named with where it came from, so every config in recsys goes through `from_mapping`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

Config = TypeVar("Config")


class ConfigError(ValueError):
    """A config value that is unknown, missing or of the wrong type; the message names where."""


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error


def from_mapping(cls: type[Config], values: Mapping[str, Any], where: str) -> Config:
    """Build dataclass `cls` from `values`, checking keys and types; `where` prefixes every error."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    checked = {name: check_type(value, hints[name], f"{where}: {name!r}") for name, value in values.items()}
    try:
        return cls(**checked)
    except TypeError as error:
        missing = [name for name, field in fields.items() if name not in values and is_required(field)]
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}") from error
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from error


def is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` if it fits `annotation` (int accepted for float; lists for tuples), else raise."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in arguments:
            try:
                return check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} must be {describe(annotation)}, got {value!r}")
    if origin is typing.Literal:
        if value not in arguments:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, arguments))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table of keys and values, got {value!r}")
        key_type, value_type = arguments
        return {
            check_type(key, key_type, f"{where} key"): check_type(item, value_type, f"{where}[{key!r}]")
            for key, item in value.items()
        }
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(check_type(item, arguments[0], f"{where}[{index}]") for index, item in enumerate(value))
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{where} must be empty, got {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where} must be {describe(annotation)}, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{where} must be {describe(annotation)}, got {value!r} ({type(value).__name__})")
    return value


def describe(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "absent"}
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(describe(option) for option in arguments if option is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(map(repr, arguments))
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"tables": {"rows": 5}} -> {"tables.rows": 5}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def to_toml(values: Mapping[str, Any]) -> str:
    """A flat mapping (values: strings, numbers, booleans, lists, tables of those) as TOML text."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in values.items())


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)
