"""Offline batch scoring: raw files of a dataset format -> click probabilities in a parquet file.

    raw files --the format's reader (the prepare path, same bad-row policy)--> prepared blocks
              --the artifact's model, in batches--> file, line, score (and label) per row
              --parquet parts beside the output (names unique to the run), joined and put in place when all
                are written; an existing output is replaced only if it is a parquet file and not an input

Rows are read exactly as `prepare` reads them for training (the row encoder of the HTTP server is
tested to give the same model inputs), so scores of the next day's files are comparable with the
training run's test metrics. When the files carry labels, AUC and log loss are computed too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.data.bad_rows import BadRowTally
from recsys.data.formats import dataset_format
from recsys.data.loader import SparseBlock, dense_matrix
from recsys.outputs import check_apart, put_in_place, remove, temporary_directory, temporary_file
from recsys.serving.artifact import ServedModel
from recsys.train.metrics import log_loss, roc_auc

PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ScoringOptions:
    labelled: bool = True
    """Whether the files carry the label field (Criteo's and Avazu's test files do not)."""
    skip_bad_rows: bool = False
    batch_rows: int = 8192
    block_bytes: int = 32 << 20


@dataclass
class ScoringResult:
    rows: int
    output: Path
    bad_rows: dict
    metrics: dict[str, float] = field(default_factory=dict)


def score_files(
    served: ServedModel,
    paths: list[Path],
    output: Path,
    options: ScoringOptions = ScoringOptions(),
    on_rows: Callable[[int], None] | None = None,
) -> ScoringResult:
    """Score every row of `paths` with `served` into the parquet file `output` (written whole or not at all)."""
    reader = dataset_format(served.manifest.get("format", "criteo")).scoring(options.labelled)
    tally = BadRowTally(skip=options.skip_bad_rows)
    check_output(output, [*paths, *([served.directory] if served.directory else [])])
    parts = temporary_directory(output)
    scores, labels, total = [], [], 0
    try:
        for path in paths:
            for frame, _ in reader([path], tally, options.block_bytes):
                scored = score_frame(served, frame, options.batch_rows)
                if "file" not in scored.columns:  # MovieLens names its ratings file itself
                    scored = scored.with_columns(file=pl.lit(str(path)))
                scored.write_parquet(parts / f"part-{len(scores):06d}.parquet", statistics=False)
                scores.append(scored["score"].to_numpy())
                if options.labelled:
                    labels.append(scored["label"].to_numpy())
                total += len(scored)
                if on_rows is not None:
                    on_rows(len(scored))
        write_joined(parts, output, options.labelled)
    finally:
        remove(parts)
    metrics = evaluation(np.concatenate(scores) if scores else np.empty(0), labels)
    return ScoringResult(total, output, tally.to_dict(), metrics)


def score_frame(served: ServedModel, frame: pl.DataFrame, batch_rows: int) -> pl.DataFrame:
    """The scores of one prepared block (with its line and label columns where it has them)."""
    encoder = served.encoder
    dense = dense_matrix(frame, list(encoder.dense_features))
    sparse = SparseBlock.from_frame(frame, list(encoder.sparse_features))
    scores = np.empty(len(frame), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(frame), batch_rows):
            index = np.arange(start, min(start + batch_rows, len(frame)))
            logits = served.model(torch.from_numpy(np.ascontiguousarray(dense[index])), sparse.take(index))
            scores[index] = torch.sigmoid(logits).numpy()
    label = served.manifest.get("label", "label")
    columns = frame.select([name for name in ("file", "line", label) if name in frame.columns]).rename(
        {label: "label"} if label in frame.columns else {}
    )
    return columns.with_columns(score=pl.Series(scores))


def check_output(output: Path, sources: list[Path]) -> None:
    """Refuse an output that is one of the inputs, or an existing file that is not a parquet file."""
    check_apart(output, sources)
    if output.is_symlink() or output.is_dir():
        raise FileExistsError(f"-o {output} is a directory or a link; give a file name such as scores.parquet")
    if output.exists():
        with open(output, "rb") as stream:
            if stream.read(4) != PARQUET_MAGIC:
                raise FileExistsError(f"-o {output} exists and is not a parquet file; it will not be replaced")


def write_joined(parts: Path, output: Path, labelled: bool) -> None:
    """Join the parts into `output` through a temporary name (file, line, score, label columns)."""
    partial = temporary_file(output)
    files = sorted(parts.glob("part-*.parquet"))
    try:
        if files:
            frame = pl.scan_parquet(files)
            names = frame.collect_schema().names()
            frame.select([name for name in ("file", "line", "score", "label") if name in names]).sink_parquet(partial)
        else:
            schema = {"file": pl.String, "line": pl.Int64, "score": pl.Float32}
            pl.DataFrame(schema=schema | ({"label": pl.Float32} if labelled else {})).write_parquet(partial)
        put_in_place(partial, output)
    finally:
        remove(partial)


def evaluation(scores: np.ndarray, labels: list[np.ndarray]) -> dict[str, float]:
    """AUC and log loss when labels were read and both classes occur; else nothing."""
    if not labels:
        return {}
    truth = np.concatenate(labels)
    if len(truth) == 0 or truth.min() == truth.max():
        return {}
    return {"auc": roc_auc(scores, truth), "logloss": log_loss(scores, truth), "rows": float(len(truth))}
