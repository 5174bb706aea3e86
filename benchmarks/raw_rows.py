"""Raw Criteo rows as a JSON client sends them, for the serving benchmarks (imports nothing of recsys)."""

from __future__ import annotations

from pathlib import Path

NAMES = ["label", *(f"I{index}" for index in range(1, 14)), *(f"C{index}" for index in range(1, 27))]


def json_rows(path: Path, count: int) -> list[dict]:
    """The first rows of a Criteo-format file: counts as JSON numbers, hex ids as strings, missing as null."""
    rows = []
    for line in path.read_text().splitlines()[:count]:
        row = dict(zip(NAMES, (value or None for value in line.split("\t"))))
        rows.append(
            {name: int(value) if name[0] in "Il" and value is not None else value for name, value in row.items()}
        )
    return rows
