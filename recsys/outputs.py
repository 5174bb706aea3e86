"""Writing outputs so that no command destroys what it did not create.

Every command that writes a file or a directory does it the same way:

1. it refuses an output that is, holds or lies inside one of its inputs (`check_apart`);
2. it writes under a temporary name unique to the run, beside the target (`temporary_directory`,
   `temporary_file`), so two runs never share one and a user's `<output>.partial` is never touched;
3. it puts the result in place with `put_in_place`: a file by an atomic rename over the old one, a
   directory by an atomic exchange with the old one (Linux `renameat2(RENAME_EXCHANGE)`), after
   which the old one, now under the temporary name, is removed. A kill at any moment leaves either
   the complete old output or the complete new one under the target's name.

Whether an existing output may be replaced at all (it must be of the command's own kind, e.g. a
prepared cache or an artifact) is for each command to decide before it starts writing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def check_apart(output: Path, sources: Iterable[Path], option: str = "-o") -> None:
    """Refuse an `output` that is one of `sources`, lies inside one, or holds one (replacing it would lose it).

    Paths are compared resolved (links followed) and, where they exist, by device and inode, so a
    case-insensitive file system or a second mount of the same directory is no way around it.
    """
    target = output.resolve()
    around_target = identities([target, *target.parents])
    for source in sources:
        resolved = source.resolve()
        overlap = target == resolved or resolved in target.parents or target in resolved.parents
        around_source = identities([resolved, *resolved.parents])
        if overlap or identities([resolved]) & around_target or identities([target]) & around_source:
            raise ValueError(
                f"{option} {output} would overwrite {source}, which this command reads; write the output elsewhere"
            )


def identities(paths: Iterable[Path]) -> set[tuple[int, int]]:
    """(device, inode) of each path that exists."""
    found = set()
    for path in paths:
        try:
            status = path.stat()
        except OSError:
            continue
        found.add((status.st_dev, status.st_ino))
    return found


def temporary_directory(target: Path) -> Path:
    """A new empty directory beside `target`, named after it and unique to this run, with the permissions
    a plain mkdir gives (mkdtemp's are private to the owner)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    path.chmod(0o777 & ~current_umask())
    return path


def temporary_file(target: Path) -> Path:
    """A new empty file beside `target`, named after it and unique to this run, with the permissions a
    plain open gives (mkstemp's are private to the owner)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(descriptor)
    Path(name).chmod(0o666 & ~current_umask())
    return Path(name)


def current_umask() -> int:
    """The process's umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove(path: Path) -> None:
    """Remove a temporary file or directory of ours, if it is still there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def put_in_place(new: Path, target: Path) -> Path:
    """Move `new` (a temporary file or directory beside `target`) to `target`, replacing what is there.

    The old target stays complete until the new one has taken its name; then it is removed.
    """
    if not target.exists() or not new.is_dir():
        os.replace(new, target)  # atomic for files; for a directory onto nothing, a plain rename
        return target
    if exchange(new, target):
        remove(new)  # `new` now names the old output
        return target
    aside = temporary_directory(target)  # no atomic exchange on this file system: two renames
    os.replace(target, aside / target.name)
    os.replace(new, target)
    remove(aside)
    return target


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))
