"""`--threads` of `train`, `sweep` and `predict`: how many torch threads, and a warning on a busy machine.

The default is the cores this process may use (its CPU affinity), divided among the processes of one
`--nproc` run. Two jobs each running as many threads as there are cores fight over them: on the
project's 2-core machine training fell from 39k to 1-2k samples/s beside another job, and kept 11-22k
with one thread (benchmarks/RESULTS.md, "Threads"). So when the machine is already busy, the command
says so and suggests fewer threads. With a fixed seed, results are identical run to run for a fixed
thread count; another count sums in another order, which can move the last digits and so the best epoch.
"""

from __future__ import annotations

import argparse
import os
import sys

from recsys.cli.arguments import positive_int
from recsys.machine import available_cores

DETERMINISM = "a fixed seed gives identical results for a fixed thread count (not across counts)"


def add_threads(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        help=f"torch threads for {what} (default: the cores this process may use, {available_cores()} here, "
        f"divided among --nproc processes; fewer when other jobs share the machine); {DETERMINISM}",
    )


def use_threads(requested: int | None, processes: int = 1) -> int:
    """Set torch's thread count (the request, else this process's share of the cores); warn if oversubscribed."""
    import torch

    threads = requested or max(1, available_cores() // processes)
    warning = busy_warning(threads * processes, available_cores(), os.getloadavg()[0])
    if warning:
        print(warning, file=sys.stderr)
    torch.set_num_threads(threads)
    return threads


def busy_warning(threads: int, cores: int, load: float) -> str | None:
    """A warning when other work (the load average before we start) leaves fewer free cores than our threads."""
    free = cores - load
    if threads <= 1 or threads <= free + 0.5:
        return None
    return (
        f"warning: the machine is busy (load {load:.1f} on {cores} cores) and {threads} threads will fight the other "
        "work for them, which can slow training several times over; --threads 1 holds up better"
    )
