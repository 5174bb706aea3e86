"""`--threads`: this process's share of the cores, a warning when other work holds them, and repeatable results."""

from __future__ import annotations

import re

import pytest
import torch

from recsys.cli import main
from recsys.cli.threads import available_cores, busy_warning, use_threads


@pytest.mark.parametrize(
    ("threads", "cores", "load", "warns"),
    [
        (2, 2, 1.0, True),  # one other job on 2 cores: 2 threads fight it
        (1, 2, 1.9, False),  # one thread never oversubscribes by itself
        (2, 2, 0.1, False),  # a quiet machine
        (4, 8, 3.0, False),  # 5 cores free for 4 threads
        (4, 8, 5.0, True),  # 3 free for 4
    ],
)
def test_a_busy_machine_is_warned_about_only_when_the_threads_do_not_fit(threads, cores, load, warns):
    warning = busy_warning(threads, cores, load)
    assert (warning is not None) == warns
    if warns:
        assert f"load {load:.1f} on {cores} cores" in warning and "--threads 1" in warning


def test_the_default_is_this_process_share_of_its_cores():
    before = torch.get_num_threads()
    try:
        assert use_threads(None) == available_cores() == torch.get_num_threads()
        assert use_threads(None, processes=available_cores() * 2) == 1
        assert use_threads(3) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_a_fixed_seed_and_thread_count_train_to_identical_metrics(synthetic_cache, tmp_path, capsys):
    spec = tmp_path / "qr.toml"
    spec.write_text('strategy = "qr"\ncompression = 10\n')
    command = ["train", "--data", str(synthetic_cache.path), "--tables", str(spec), "--epochs", "1", "--no-progress"]
    command += ["--bottom-mlp", "8", "--top-mlp", "8", "--no-tracking", "--threads", "2", "--seed", "3"]
    before = torch.get_num_threads()
    try:
        printed = []
        for _ in range(2):
            assert main(command) == 0
            printed.append(re.findall(r"(val/auc|test/auc|test/logloss): (\S+)", capsys.readouterr().out))
    finally:
        torch.set_num_threads(before)
    assert printed[0] == printed[1] and len(printed[0]) == 3
