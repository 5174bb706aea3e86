"""The bad-row policy shared by every reader: stop at the first malformed row, or skip and count.

Nothing is dropped silently: skipped rows are tallied by reason and the first examples are kept
with their file and line, so `prepare` can report exactly what it left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


class MalformedRowError(ValueError):
    """A raw row that does not fit the dataset's format, located by file and 1-based line."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(
            f"{path}:{line}: {reason}. Fix the row, or pass --skip-bad-rows to skip malformed rows and count them."
        )
        self.path = path
        self.line = line
        self.reason = reason


@dataclass
class BadRowTally:
    """Malformed rows met so far: raise on the first one, or (when skipping) count them by reason."""

    skip: bool = False
    max_examples: int = 10
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def report(self, path: str, line: int, kind: str, detail: str) -> None:
        """Record one malformed row; `kind` groups rows in the summary, `detail` names the value."""
        if not self.skip:
            raise MalformedRowError(path, line, detail)
        self.counts[kind] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{path}:{line}: {detail}")

    @property
    def total(self) -> int:
        """Rows skipped so far."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the user: how many rows were skipped, why, and the first of them."""
        if not self.total:
            return "no malformed rows"
        reasons = ", ".join(f"{count} {kind}" for kind, count in self.counts.most_common())
        return f"skipped {self.total} malformed rows ({reasons}); first: {self.examples[0]}"

    def to_dict(self) -> dict:
        """The report as `meta.json` keeps it."""
        return {
            "skipped": self.total,
            "by_reason": dict(self.counts),
            "examples": list(self.examples),
            "summary": self.summary(),
        }
