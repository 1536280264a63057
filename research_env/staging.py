"""Directories that appear whole or not at all: indexes, converted tokenizers, model checkpoints.

A process killed half-way through writing one (or a second process racing it) must never leave a
directory that a later run mistakes for a complete one. Everything is written into a temporary sibling and
moved into place with one ``os.replace``, a rename on the same file system.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
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
