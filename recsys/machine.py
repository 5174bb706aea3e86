"""What this machine offers a process: the cores it may run on (its CPU affinity, not every core of the host).

Both torch's thread count (`recsys.cli.threads`) and the synthetic generator's worker processes
(`recsys.data.synth_files`) default to it.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
