"""Argument types and help shared by the `recsys` commands: sizes, lists, fractions, the tracking store, and
settings dataclasses filled from the options given (their defaults stated once, in the dataclass)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

TRACKING_HELP = "MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite file mlflow.db here)"


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def byte_size(text: str) -> int:
    """A byte count: 1500000, 1.5e6, 500MB, 2GiB, 64k."""
    units = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    units |= {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    units |= {"tib": 2**40, "b": 1}
    number = text.strip().lower().rstrip("abgikmt")
    unit = text.strip().lower()[len(number) :]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}; write e.g. 2GiB, 500MB or 1500000")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return int(value)


def split_argument(text: str) -> tuple[float, float, float]:
    """train,val,test by row order: fractions adding up to 1 (0.8,0.1,0.1) or row counts (51949,5773,0)."""
    from recsys.data.prepare import check_row_split

    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected train,val,test fractions or row counts, got {text!r}") from None
    try:
        check_row_split(parts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return parts  # type: ignore[return-value]


def non_negative_int(text: str) -> int:
    """An integer of at least 0 below 2**64 (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**64 - 1, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1 (rows, megabytes, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port to listen on: 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds, finite and above 0 (timeouts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """A file to read: it must exist, be a file and be readable (checked before any work starts)."""
    path = readable(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file")
    return path


def existing_directory(text: str) -> Path:
    """A directory to read (a prepared cache, an exported model)."""
    path = readable(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory")
    return path


def readable(text: str) -> Path:
    """A file or directory to read (raw inputs: files, or a MovieLens directory)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text} cannot be read (permission denied)")
    return path


def output_file(text: str) -> Path:
    """A file to write: not a directory, under a directory that exists or can be created there."""
    path = creatable(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name to write")
    return path


def output_directory(text: str) -> Path:
    """A directory to write into or create: not a file, under a directory that exists or can be created."""
    path = creatable(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a directory to write")
    return path


def output_directory_name(text: str) -> str:
    """`output_directory`, kept as text (for settings whose field is a string, like the checkpoint directory)."""
    return str(output_directory(text))


def creatable(text: str) -> Path:
    """A path whose nearest existing ancestor is a directory this process can write to."""
    path = Path(text)
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise argparse.ArgumentTypeError(f"cannot create {text}: {ancestor} is a file, not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"cannot create {text}: {ancestor} is not writable")
            break
    return path


def config_default(config: type, name: str) -> Any:
    """The default of field `name` of dataclass `config`: stated once, there, and quoted in --help."""
    return next(field.default for field in dataclasses.fields(config) if field.name == name)


def given_settings(arguments: argparse.Namespace, config: type) -> dict[str, Any]:
    """The options given on the command line that are fields of `config` (the others keep its defaults)."""
    names = {field.name for field in dataclasses.fields(config)}
    return {name: value for name, value in vars(arguments).items() if name in names}
