"""Atomic file writes: readers see the old file or the new one, never a part of either.

:func:`atomic_write` writes through a temp file in the target's folder, named
``.<name>.<random>.tmp``, flushed and fsynced before ``os.replace`` puts it in place. A write that
fails (the writer raises, the disk is full, the process is interrupted) removes its temp file and
leaves the target as it was; only a writer killed outright leaves the temp file behind, and
:func:`remove_stale_temps` deletes those.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP = ".tmp"  # suffix of the temp files of atomic writes (a killed writer may leave one behind)
PREVIOUS = ".prev"  # suffix of the file that ``keep_previous`` keeps


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], object], *, keep_previous: bool = False
) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a binary temp file that then replaces ``path``.

    ``keep_previous``: the file it replaces is kept as ``<name>.prev``. The temp file is made with
    ``tempfile.mkstemp``; an error from making it (read-only or missing folder) propagates as is."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(path.name + PREVIOUS))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path, names: tuple[str, ...]) -> None:
    """Delete the temp files that an atomic write of ``folder/<name>`` (for ``name`` in ``names``)
    left behind when its writer was killed — and nothing else (no recursion, no other pattern).

    Call it only while holding the run's lock, so that no live writer owns such a file."""
    folder = Path(folder)
    for name in names:
        for stale in folder.glob(f".{name}.*{TMP}"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
