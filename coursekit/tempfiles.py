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
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(file)`` under a temporary name next to ``path``, flush it to disk, then rename
    it over ``path``: a reader sees the old file or the complete new one, never a part.

    The temporary is ``.<name>.<random>.tmp`` (stale ones are removed first) and
    gets the mode of any new file (``0o666 & ~umask``). The folder is created.

    Args:
        path: the file to write.
        write: writes the whole content to the binary file it is given.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the folder is not writable or the disk is full; ``path`` is as before and no temporary is left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name, ".tmp")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # os.open with 0o666 gives the file the mode of any new file; mkstemp would make it 0o600.
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as ``write_atomically``; returns ``path`` as a Path."""
    data = text.encode("utf-8")
    return write_atomically(path, lambda file: file.write(data))
