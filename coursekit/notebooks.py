"""Execute the course notebooks so their stored outputs are a known profile's run, and measure how
much their training numbers move on other machines."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from . import config, progress, regression, tempfiles


class NotebookError(RuntimeError):
    """A notebook did not run to its end: names the notebook, the cell and what went wrong.

    Attributes:
        ename: the exception's class name when a cell raised (e.g. ``"DatasetNotFoundError"``), else ``None``.
        evalue: its message, else ``None``.
    """

    def __init__(self, message: str, ename: str | None = None, evalue: str | None = None):
        super().__init__(message)
        self.ename, self.evalue = ename, evalue


def _failed_cell(notebook: nbformat.NotebookNode) -> str:
    """``'cell 7 (id ab12)'`` for the first code cell with an error output, or ``'a cell'``."""
    for index, cell in enumerate(notebook.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return f"cell {index} (id {cell.get('id', '?')})"
    return "a cell"


# Runs that simulate other machines on this one: other instruction sets for ATen, oneDNN, MKL and
# OpenBLAS kernels, and other thread counts (which split reductions differently).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
SIMULATED_MACHINES: dict[str, dict[str, str]] = {
    "avx2": AVX2,
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
    "3-threads": {"OMP_NUM_THREADS": "3"},
    "4-threads": {"OMP_NUM_THREADS": "4"},
    "avx2-1-thread": {**AVX2, "OMP_NUM_THREADS": "1"},
    "aten-default-4-threads": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "4"},
}


def run(path: str | os.PathLike, profile: str = "ci", timeout: int = 900,
        env: dict[str, str] | None = None, on_cell: Callable[[int, int], None] | None = None,
        allow_errors: bool = False) -> tuple[nbformat.NotebookNode, float]:
    """Run every cell of the notebook at ``path`` in ``profile`` in a fresh kernel.

    The kernel runs in the notebook's folder with ``COURSEKIT_PROFILE`` set and
    ``env`` added to this process's environment; the file is not changed.
    ``on_cell(index, count)`` is called as each cell starts (for a progress
    bar). With ``allow_errors`` a cell that raises keeps its error output and
    the run goes on. Progress bars get their final line as text
    (``progress.settle``), so that readers without widgets see where they ended.

    Returns:
        ``(notebook, seconds)``: the executed notebook and the wall-clock time.

    Raises:
        ValueError: ``profile`` is not a profile.
        FileNotFoundError: there is no file at ``path``.
        NotebookError: a cell raised, ran past ``timeout`` seconds or killed its kernel.
    """
    if profile not in config.PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(config.PROFILES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such notebook")
    notebook = nbformat.read(path, as_version=4)
    kernel_env = {**os.environ, **(env or {}), "COURSEKIT_PROFILE": profile}
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    if on_cell is not None:
        client.on_cell_start = lambda cell, cell_index: on_cell(cell_index, len(notebook.cells))
    try:
        client.execute(env=kernel_env)
    except CellTimeoutError as exc:
        raise NotebookError(f"{path}: a cell ran longer than {timeout} s; raise --timeout or the cell's "
                            f"profile settings") from exc
    except DeadKernelError as exc:
        raise NotebookError(f"{path}: the kernel died in {_failed_cell(notebook)} (out of memory?)") from exc
    except CellExecutionError as exc:
        raise NotebookError(f"{path}: {_failed_cell(notebook)} raised {exc.ename}: {exc.evalue}; open the "
                            f"notebook to see the traceback", exc.ename, exc.evalue) from exc
    progress.settle(notebook)
    return notebook, time.perf_counter() - start


def execute(path: str | os.PathLike, profile: str = "ci", timeout: int = 900) -> float:
    """Run the notebook at ``path`` (see ``run``) and store its outputs in place; returns the seconds taken.

    The file is rewritten only after a successful run, atomically.
    """
    path = Path(path)
    notebook, seconds = run(path, profile, timeout)
    write(notebook, path)
    return seconds


def this_machine() -> dict[str, dict[str, str]]:
    """This machine as it is, named for ``measure_tolerances(..., add=True)``: ``{"<cpu> x<cores>": {}}``."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return {f"{cpu} x{os.cpu_count()}": {}}


def measure_tolerances(path: str | os.PathLike, machines: dict[str, dict[str, str]] | None = None,
                       timeout: int = 900, progress=print, add: bool = False) -> tuple[list[regression.Entry], list[str]]:
    """Run the notebook once per simulated machine and write its tolerance table.

    The stored outputs are the reference (``execute`` them first): every number of
    a ``training-output`` cell gets the largest deviation seen across the runs and
    its tolerance (``regression.derive``), positions counted after the patterns of
    ``sanitize.cfg`` beside the notebook, as nbval applies them. The table is
    written only when no output moved where it may not.

    With ``add`` the runs (default: ``this_machine()``) widen the existing table
    instead of replacing it (``regression.widen``): a real machine whose numbers
    move more than the simulated ones did is added to what they measured.

    Returns:
        ``(entries, problems)`` as ``regression.derive`` gives them.
    """
    path = Path(path)
    if machines is None:
        machines = this_machine() if add else SIMULATED_MACHINES
    stored = nbformat.read(path, as_version=4)
    runs = {}
    for name, env in machines.items():
        notebook, seconds = run(path, "ci", timeout, env)
        progress(f"{path.name}: run {name} ({' '.join(f'{k}={v}' for k, v in env.items())}) took {seconds:.0f} s")
        runs[name] = notebook.cells
    config_path = path.parent / "sanitize.cfg"
    sanitize = regression.sanitizer(config_path) if config_path.exists() else (lambda text: text)
    entries, problems = regression.derive(stored.cells, runs, sanitize)
    table = regression.table_path(path)
    if add and table.exists():
        entries = regression.widen(entries, regression.load(table))
        machines = {**json.loads(table.read_text())["runs"], **machines}
    if not problems:
        regression.save(table, entries, machines, path.name)
    return entries, problems


def write(notebook: nbformat.NotebookNode, path: str | os.PathLike) -> Path:
    """Write ``notebook`` to ``path`` atomically (a temporary file beside it, then a rename); returns the path."""
    return tempfiles.write_text(path, nbformat.writes(notebook))
