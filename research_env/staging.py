"""Directories that appear whole or not at all: indexes, converted tokenizers, model checkpoints.

A process killed half-way through writing one (or a second process racing it) must never leave a
directory that a later run mistakes for a complete one. Everything is written into a temporary sibling and
moved into place with one ``os.replace``, a rename on the same file system.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_directory(target: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty sibling of ``target`` to fill; when the block ends normally it becomes ``target``.

    ``overwrite=True`` first removes an existing ``target`` (the caller holds whatever lock makes that
    safe). With ``overwrite=False`` an existing non-empty ``target`` makes the rename fail with
    ``OSError``: a cache whose loser of a race keeps the winner's copy catches that. The staging directory
    is removed on every path out, and is made world-readable (``mkdtemp`` creates it 0700), so a shared
    cache is usable by other users.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)
        if overwrite and target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_once(target: str | os.PathLike, write: Callable[[Path], object], *, complete: str) -> Path:
    """A cache directory filled by ``write(staging)`` unless ``target/complete`` already exists; ``target``.

    Without a lock, concurrent processes may both write: the first complete copy moved into place wins and
    the others are discarded, so a reader never sees a half-written directory and no process deletes one
    that another is reading. Only that lost race is forgiven; any other failure is raised.
    """
    target = Path(target)
    if (target / complete).is_file():
        return target
    try:
        with staged_directory(target, overwrite=False) as staging:
            write(staging)
    except OSError:
        if not (target / complete).is_file():
            raise
    return target


def build_once(target: str | os.PathLike, build: Callable[[Path], object]) -> Path:
    """A cache directory made by ``build(target)`` unless it already exists; ``target``.

    For builds too costly to run twice (indexes): one builder at a time across processes, under a file lock
    beside ``target``; the others wait and reuse its result. ``build`` must publish ``target`` whole, e.g.
    through :func:`staged_directory`, so that a directory that exists is a complete one.
    """
    from filelock import FileLock

    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_dir():
            build(target)
    return target
