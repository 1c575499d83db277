"""Temporary files and folders that writers leave next to their target, and the removal of stale ones.

The kit writes everything that must not look complete half-way (downloads,
extractions, checkpoints, synthetic datasets) under a hidden temporary name
next to its target, ``.<target name>.<random><suffix>`` (the random part
has no dot, as ``tempfile.mkstemp`` makes it), and renames it
into place at the end. A writer that is killed leaves its temporary behind;
the next writer of the same target removes those that nobody has touched
for ``STALE_AGE`` seconds (a writer at work touches its own far more often).
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import time
from pathlib import Path

STALE_AGE = 3600.0  # seconds


def remove_stale(folder: str | os.PathLike, name: str, suffix: str, max_age: float = STALE_AGE) -> int:
    """Delete the ``.<name>.<random><suffix>`` files and folders in ``folder`` untouched for ``max_age`` seconds.

    The random part has no dot, so the temporaries of ``net.pt.x`` are not taken for those of ``net.pt``.

    Args:
        folder: where the target and its temporaries lie (need not exist).
        name: the target's file name.
        suffix: the temporaries' suffix, e.g. ``".part"``.
        max_age: seconds since the last modification after which a temporary is stale.

    Returns:
        How many were removed. Ones that another process removes first, or
        that may not be removed, are left alone.
    """
    cutoff = time.time() - max_age
    pattern = re.compile(rf"\.{re.escape(name)}\.[^.]+{re.escape(suffix)}")
    removed = 0
    for path in Path(folder).glob(f".{glob.escape(name)}.*{glob.escape(suffix)}"):
        if not pattern.fullmatch(path.name):
            continue
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
    return removed
