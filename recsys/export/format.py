"""The artifact format, shared by its writer (`recsys.export.artifact`) and its reader (`recsys.serving.artifact`).

    <dir>/manifest.json    what the model is and how raw rows become its inputs (schema: `Manifest`),
                           and the sha256 of every other file (`files`)
    <dir>/manifest.sha256  the sha256 of manifest.json, so that no byte of the artifact can change unseen
    <dir>/model.pt         the serving model's state (tensors only: loads with weights_only=True)
    <dir>/statistics.pt    the statistics the lookup's constructor asked for (`RecordingStatistics`)
    <dir>/signature.sig    optional: every other file signed with a private key (`recsys.export.signing`)

`verified` is the only way in: the directory must hold exactly these files (none unlisted, none
missing, no links), the manifest must match its checksum and its schema (an error names the key),
and every file must match its checksum. Imports nothing heavier than the config checker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from recsys.checksums import ChecksumError, checksums, sha256, verify
from recsys.config import ConfigError, from_mapping

MANIFEST = "manifest.json"
MANIFEST_CHECKSUM = "manifest.sha256"
SIGNATURE = "signature.sig"
"""Present when the artifact was signed (`recsys.export.signing`)."""
OWN_FILES = {MANIFEST, MANIFEST_CHECKSUM, SIGNATURE}
MODEL_FILE = "model.pt"
STATISTICS_FILE = "statistics.pt"
PAYLOAD = (MODEL_FILE, STATISTICS_FILE)
FORMAT_VERSION = 2


class ArtifactError(ValueError):
    """An artifact that is incomplete, altered, malformed or of another format version."""


@dataclass(frozen=True)
class ModelSection:
    name: str
    overrides: dict
    dense_features: int


@dataclass(frozen=True)
class RawFieldSection:
    name: str
    kind: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class EncoderSection:
    raw_fields: tuple[dict, ...]
    dense_features: tuple[str, ...]
    sparse_features: tuple[str, ...]


@dataclass(frozen=True)
class VocabularyEntry:
    feature: str
    min_count: int
    key: str


@dataclass(frozen=True)
class FrequencyEntry:
    feature: str
    number: int


@dataclass(frozen=True)
class StatisticsSection:
    cardinalities: dict[str, int]
    vocabularies: tuple[dict, ...]
    frequencies: tuple[dict, ...]


@dataclass(frozen=True)
class MemorySection:
    table_bytes: int
    index_bytes: int
    full_bytes: int


@dataclass(frozen=True)
class Manifest:
    """The keys of manifest.json and their types; nested sections are checked by their own classes."""

    format_version: int
    model: dict
    tables: dict
    table_shape: dict[str, int] | None
    precision: Literal["fp32", "fp16", "int8"]
    quantization: dict | None
    memory: dict
    encoder: dict
    dataset: str
    format: str
    label: str
    metrics: dict[str, float]
    source: dict
    versions: dict[str, str]
    statistics: dict
    files: dict[str, str]


SECTIONS = {
    "model": ModelSection,
    "memory": MemorySection,
    "encoder": EncoderSection,
    "statistics": StatisticsSection,
}
LISTS = {
    ("encoder", "raw_fields"): RawFieldSection,
    ("statistics", "vocabularies"): VocabularyEntry,
    ("statistics", "frequencies"): FrequencyEntry,
}


def check_schema(manifest: object, where: str) -> None:
    """Raise ArtifactError naming the key whose value is absent, unknown or of the wrong type."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: not a JSON object")
    try:
        from_mapping(Manifest, manifest, where)
        for key, section in SECTIONS.items():
            from_mapping(section, manifest[key], f"{where}: {key}")
        for (key, name), entry in LISTS.items():
            for index, item in enumerate(manifest[key][name]):
                from_mapping(entry, item, f"{where}: {key}.{name}[{index}]")
    except ConfigError as error:
        raise ArtifactError(str(error)) from None
    missing = [name for name in PAYLOAD if name not in manifest["files"]]
    if missing:
        raise ArtifactError(f"{where}: files lists no {', '.join(missing)}")


def read_manifest(directory: Path) -> dict:
    """The manifest, after checking it against its own checksum, its format version and its schema."""
    path = directory / MANIFEST
    if not directory.is_dir() or not path.is_file():
        raise ArtifactError(f"{directory} is not an exported model (no {MANIFEST})")
    checksum = directory / MANIFEST_CHECKSUM
    if not checksum.is_file():
        raise ArtifactError(f"{checksum} is missing; export the model again")
    if sha256(path) != checksum.read_text().strip():
        raise ArtifactError(f"{path}: checksum mismatch (against {MANIFEST_CHECKSUM}); the manifest was changed")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise ArtifactError(f"{path}: nested too deeply to be a manifest; export the model again") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: not a JSON object; export the model again")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format {version} is not {FORMAT_VERSION}; export the model again")
    check_schema(manifest, str(path))
    return manifest


def verified(directory: Path) -> dict:
    """The manifest of an artifact that holds exactly its listed files, each with its checksum."""
    manifest = read_manifest(directory)
    try:
        verify(directory, manifest["files"], OWN_FILES)
    except ChecksumError as error:
        raise ArtifactError(str(error)) from None
    return manifest


def is_artifact(directory: Path) -> bool:
    """Whether `directory` holds an artifact's plain files and nothing else (so that replacing it loses
    nothing else); an artifact of an older format version counts."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = set(manifest["files"]) | OWN_FILES
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = list(directory.iterdir())
    return all(path.name in files and path.is_file() and not path.is_symlink() for path in present)


def write_manifest(directory: Path, manifest: dict) -> None:
    """Checksum the payload files, then write manifest.json and, last, its own checksum."""
    manifest = {**manifest, "format_version": FORMAT_VERSION}
    manifest["files"] = checksums(directory, list(PAYLOAD))
    check_schema(json.loads(json.dumps(manifest, default=list)), f"{directory / MANIFEST} (being written)")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=list))
    (directory / MANIFEST_CHECKSUM).write_text(sha256(directory / MANIFEST) + "\n")
