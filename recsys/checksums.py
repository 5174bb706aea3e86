"""Checksummed directories: a list of sha256 per file, and the check that a directory still matches it.

Checkpoints (`recsys.train.checkpoint`) and artifacts (`recsys.export.format`) are directories of
plain files whose list of checksums is written last. Reading one first checks that the directory
holds exactly the listed files (none missing, none added, no links, no names that leave the
directory) and that each still has its checksum, so a changed, truncated, missing or foreign
file is refused by name before anything is loaded.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PLAIN_NAME = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9_.-]+")
"""A file name that stays inside its directory: one component, not `.` or `..`, no separators."""
SHA256 = re.compile(r"[0-9a-f]{64}")


class ChecksumError(ValueError):
    """A directory that does not hold exactly its listed files with their checksums; names the file."""


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checksums(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named file of `directory`."""
    return {name: sha256(directory / name) for name in sorted(names)}


def check_listing(directory: Path, listed: dict[str, str], own: set[str]) -> None:
    """Every listed name is plain with a sha256 hex digest; the directory holds these files and `own`, nothing else."""
    for name, digest in listed.items():
        if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name) or name in own:
            raise ChecksumError(f"{directory}: the file list names {name!r}, which is not a plain file name in it")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise ChecksumError(f"{directory / name}: its listed checksum {digest!r} is not a sha256 hex digest")
    present = {path.name for path in directory.iterdir()}
    for name in sorted(present & own):
        if (directory / name).is_symlink():
            raise ChecksumError(f"{directory / name} is a link, not a plain file")
    for name in sorted(set(listed) - present):
        raise ChecksumError(f"{directory / name} is missing")
    for name in sorted(present - set(listed) - own):
        raise ChecksumError(f"{directory / name} is not in the file list: a file was added, remove it")
    for name in sorted(listed):
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise ChecksumError(f"{path} is not a plain file (a link or a directory)")


def verify(directory: Path, listed: dict[str, str], own: set[str]) -> None:
    """`check_listing`, then every listed file's checksum."""
    check_listing(directory, listed, own)
    for name, digest in sorted(listed.items()):
        if sha256(directory / name) != digest:
            raise ChecksumError(f"{directory / name}: checksum mismatch; the file was changed or is incomplete")
