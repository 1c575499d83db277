"""Execute the course notebooks so their stored outputs are a known profile's run."""
from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from . import config


def execute(path: str | os.PathLike, profile: str = "ci", timeout: int = 900) -> float:
    """Run every cell of the notebook at ``path`` in ``profile`` and store the outputs in place.

    The kernel runs in the notebook's folder with ``COURSEKIT_PROFILE`` set,
    so the stored outputs are exactly what nbval later compares against.

    Args:
        path: the ``.ipynb`` file; it is rewritten only after a successful run.
        profile: one of ``config.PROFILES``.
        timeout: seconds allowed per cell.

    Returns:
        The wall-clock seconds the run took.
    """
    if profile not in config.PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(config.PROFILES)}")
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    previous = os.environ.get("COURSEKIT_PROFILE")
    os.environ["COURSEKIT_PROFILE"] = profile
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    finally:
        if previous is None:
            os.environ.pop("COURSEKIT_PROFILE", None)
        else:
            os.environ["COURSEKIT_PROFILE"] = previous
    seconds = time.perf_counter() - start
    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)
    return seconds
