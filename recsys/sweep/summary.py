"""What `recsys sweep` says as it goes: a line per finished configuration, and a closing table.

The figures are those of the model each configuration ships (the best epoch's weights where early
stopping restored them; the compact serving form's test AUC and size where the strategy builds one),
so the table agrees with the runs in MLflow and with `recsys report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recsys.sweep.spec import Configuration
from recsys.train.loop import TrainResult

COLUMNS = ("model", "strategy", "budget", "seed", "best epoch", "val AUC", "test AUC", "samples/s", "bytes")


@dataclass(frozen=True)
class ConfigurationResult:
    """One finished configuration's figures."""

    model: str
    strategy: str
    budget: str
    seed: int
    best_epoch: int
    val_auc: float
    test_auc: float
    samples_per_second: float
    total_bytes: int

    @classmethod
    def of(cls, configuration: Configuration, result: TrainResult) -> ConfigurationResult:
        metrics = result.shipped_metrics
        return cls(
            model=configuration.model,
            strategy=configuration.spec.strategy,
            budget="full" if configuration.compression is None else f"{configuration.compression:g}x",
            seed=configuration.seed,
            best_epoch=int(metrics.get("best_epoch", metrics.get("epoch", 0))),
            val_auc=metrics.get("val/auc", math.nan),
            test_auc=metrics.get("test/auc", math.nan),
            samples_per_second=metrics.get("train/samples_per_s", math.nan),
            total_bytes=result.shipped_memory.total_bytes,
        )

    def cells(self) -> tuple[str, ...]:
        return (
            self.model,
            self.strategy,
            self.budget,
            str(self.seed),
            str(self.best_epoch),
            f"{self.val_auc:.4f}",
            f"{self.test_auc:.4f}" if not math.isnan(self.test_auc) else "no test rows",
            f"{self.samples_per_second:,.0f}",
            f"{self.total_bytes:,}",
        )

    def line(self) -> str:
        """One line for the log as the configuration finishes."""
        return "finished " + ", ".join(f"{name} {value}" for name, value in zip(COLUMNS, self.cells()))


def ranked_auc(auc: float) -> float:
    """An AUC to sort by: a missing one (no test rows) last."""
    return -math.inf if math.isnan(auc) else auc


def results_table(results: list[ConfigurationResult]) -> str:
    """The finished configurations as an aligned text table, by model, then best test AUC first."""
    ordered = sorted(results, key=lambda result: (result.model, -ranked_auc(result.test_auc)))
    rows = [COLUMNS, *(result.cells() for result in ordered)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    numeric = set(range(3, len(COLUMNS)))

    def aligned(row: tuple[str, ...]) -> str:
        return "  ".join(cell.rjust(width) if index in numeric else cell.ljust(width)
                         for index, (cell, width) in enumerate(zip(row, widths))).rstrip()  # fmt: skip

    return "\n".join([aligned(rows[0]), *(aligned(row) for row in rows[1:])])
