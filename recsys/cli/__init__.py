"""The `recsys` command: parses arguments, calls the modules that do the work, prints results.

One module per group of commands (`data`, `train`, `sweep`, `serving`, `demo`), each adding its
parsers and its handlers; `main` dispatches and turns the errors a user can act on into one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from recsys.cli import data, demo, serving, sweep, train
from recsys.quiet import quiet_libraries

EXPECTED_ERRORS = (ValueError, OSError)
"""Errors that carry a message for the user (bad input; files missing, unwritable, or a disk full): shown as one
line. Anything else is a bug and shows its traceback; RECSYS_DEBUG=1 shows it for these too."""
GROUPS = (data, train, sweep, serving, demo)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="recsys",
        allow_abbrev=False,
        description="Train CTR models on Criteo-style click logs with interchangeable embedding-table strategies.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = parser().parse_args(argv)
    quiet_libraries()
    if arguments.command == "train" and arguments.nproc != 1:
        return train.launch_processes(arguments, argv)
    from recsys.config import ConfigError
    from recsys.tracking import TrackingUnavailable

    try:
        arguments.handler(arguments)
    except (ConfigError, TrackingUnavailable, *EXPECTED_ERRORS) as error:
        if os.environ.get("RECSYS_DEBUG"):
            raise
        print(f"recsys {arguments.command}: error: {message_of(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def message_of(error: BaseException) -> str:
    """The one line shown for an expected error: an OS error as "path: what went wrong", without its errno."""
    if isinstance(error, OSError) and error.strerror:
        paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        return f"{paths}: {error.strerror}" if paths else error.strerror
    return str(error)
