"""Write an inference artifact (its format: `recsys.export.format`) from a finished model.

Export knows nothing of training: it receives a `FinishedModel` (the unsharded serving model, the
statistics record its lookup is rebuilt from, what it is, and how to measure it on the test split)
and writes it. The directory is written under a temporary name unique to the run and put in place
when complete; an existing output is replaced only when it is an artifact itself, and never when
it is, holds or lies inside what the model was made from (the prepared data, the checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from recsys import __version__
from recsys.export.format import MODEL_FILE, STATISTICS_FILE, is_artifact, write_manifest
from recsys.outputs import check_apart, put_in_place, remove, temporary_directory
from recsys.tables.interface import lookup_of
from recsys.tables.quantize import PRECISIONS, storage_bytes

if TYPE_CHECKING:
    from recsys.train.finished import FinishedModel


def export_model(
    finished: FinishedModel, directory: Path, precision: str = "fp32", signing_key: Path | None = None
) -> Path:
    """Write the artifact of `finished` to `directory`.

    With `precision` int8 or fp16 the tables are quantized first (in place) and the change in test
    AUC is measured and recorded; with `signing_key` (a PEM private key) the artifact is signed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    check_output(directory, finished.inputs)
    if signing_key is not None:  # before any work: a missing key or package is found now
        from recsys.export.signing import check_key, model_signing

        check_key(signing_key, "signing key")
        model_signing()
    lookup = lookup_of(finished.model)
    quantization = None
    if precision != "fp32":
        from recsys.export.quantization import quantize_and_measure

        quantization = quantize_and_measure(finished.model, finished.test_metrics, precision)
    report = lookup.memory_report()
    manifest = {
        **finished.description,
        "table_shape": lookup.serving_shape(),
        "precision": precision,
        "quantization": quantization,
        "memory": {
            "table_bytes": storage_bytes(lookup),
            "index_bytes": report.index_bytes,
            "full_bytes": report.full_bytes,
        },
        "metrics": finished.metrics,
        "source": finished.source,
        "versions": {"recsys": __version__, "torch": torch.__version__},
    }
    return write_artifact(directory, finished, manifest, signing_key)


def check_output(directory: Path, sources: list[Path]) -> None:
    """Refuse an output that would overwrite a source, or a directory that is not an artifact."""
    check_apart(directory, sources)
    if directory.is_symlink():
        raise FileExistsError(f"-o {directory} is a link; give the artifact directory itself")
    empty = directory.is_dir() and not any(directory.iterdir())
    if directory.exists() and not empty and not (directory.is_dir() and is_artifact(directory)):
        raise FileExistsError(
            f"-o {directory} exists and is not a recsys artifact (or holds other files too); it will not be "
            "replaced: choose another output"
        )


def write_artifact(directory: Path, finished: FinishedModel, manifest: dict, signing_key: Path | None = None) -> Path:
    """model.pt, statistics.pt, the manifest (with its checksums) and the signature, written beside and put in place."""
    index, arrays = finished.statistics.to_record()
    partial = temporary_directory(directory)
    try:
        state = {key: value.detach().cpu().contiguous() for key, value in finished.model.state_dict().items()}
        torch.save(state, partial / MODEL_FILE)
        torch.save({key: torch.from_numpy(value) for key, value in arrays.items()}, partial / STATISTICS_FILE)
        write_manifest(partial, {**manifest, "statistics": index})
        if signing_key is not None:
            from recsys.export.signing import sign_artifact

            sign_artifact(partial, signing_key)
        put_in_place(partial, directory)
    finally:
        remove(partial)
    return directory
