"""Student versions of the solution notebooks, and the exercise layout the grader reads.

A solution notebook marks what the student writes with regions

    ### BEGIN SOLUTION
    ...
    ### END SOLUTION

in code cells (the region becomes ``# YOUR CODE HERE`` and ``raise
NotImplementedError()`` at the marker's indentation) and in markdown cells (the
region becomes ``YOUR ANSWER HERE``). ``### BEGIN HIDDEN TESTS`` /
``### END HIDDEN TESTS`` regions of check cells are removed altogether: only
the grader runs them. These are nbgrader's own markers and stubs, and the
solution notebooks carry nbgrader's cell metadata (``metadata.nbgrader``:
``solution``, ``grade``, ``points``, ``grade_id``, ``locked``), so
``nbgrader generate_assignment`` accepts them as well and gives the same
student cells.

A marker must stand on a line of its own; a line that only mentions one, an
unclosed region or a nested one is a ``MarkerError`` naming the notebook and
the cell, so a solution never leaks because of a typo.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import __version__, notebooks

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = ("YOUR ANSWER HERE",)
# Cell metadata that records a run (timestamps), not the assignment.
RUN_METADATA = ("execution", "collapsed", "scrolled")


class MarkerError(ValueError):
    """A solution or hidden-test marker is misplaced; the message names the notebook and the cell."""


@dataclass(frozen=True)
class Part:
    """One graded or written part of an assignment, from a cell's nbgrader metadata.

    Attributes:
        grade_id: nbgrader's id of the cell, unique in the notebook.
        index: the cell's position in the notebook.
        kind: ``"exercise"`` (code the student writes), ``"check"`` (a locked cell whose
            success earns ``points``) or ``"written"`` (an answer graded by hand).
        points: what the part is worth (0 for exercises: their check carries the points).
    """

    grade_id: str
    index: int
    kind: str
    points: float


def _phrase(marker: str) -> str:
    """The words of a marker without its comment mark: ``'BEGIN SOLUTION'`` (how nbgrader finds markers)."""
    return marker.lstrip("# ")


def replace_regions(source: str, markers: tuple[str, str], stub: tuple[str, ...], where: str) -> tuple[str, int]:
    """Replace every ``markers`` region of ``source`` by ``stub`` lines at the opening marker's indentation.

    Args:
        source: a cell's text.
        markers: ``(begin, end)`` marker lines, e.g. ``SOLUTION``.
        stub: the replacement lines (empty: the region is removed).
        where: ``"notebook.ipynb, cell 7"``, for error messages.

    Returns:
        ``(new_source, number_of_regions)``.

    Raises:
        MarkerError: a marker shares its line with other text, is nested, or is never closed
            (or closed without being opened).
    """
    begin, end = markers
    out, inside, regions = [], False, 0
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if _phrase(begin) in line or _phrase(end) in line:
            opening = _phrase(begin) in line
            if stripped not in markers:
                raise MarkerError(f"{where}, line {number}: a marker must stand on a line of its own as "
                                  f"{begin!r} or {end!r} (got {stripped!r}); reword the text that mentions it")
            if opening and inside:
                raise MarkerError(f"{where}, line {number}: {begin!r} inside an open region; regions do not nest")
            if not opening and not inside:
                raise MarkerError(f"{where}, line {number}: {end!r} without a {begin!r} before it")
            if opening:
                indent = line[:len(line) - len(line.lstrip())]
                out.extend(indent + stub_line for stub_line in stub)
                regions += 1
            inside = opening
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(out), regions


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def parts(notebook: nbformat.NotebookNode) -> list[Part]:
    """The notebook's exercises, checks and written answers, in order, from their nbgrader metadata."""
    found = []
    for index, cell in enumerate(notebook.cells):
        meta = _nbgrader(cell)
        if not (meta.get("solution") or meta.get("grade")):
            continue
        if meta.get("grade") and cell.cell_type == "code":
            kind = "check"
        elif meta.get("grade"):
            kind = "written"
        else:
            kind = "exercise"
        found.append(Part(meta["grade_id"], index, kind, float(meta.get("points", 0))))
    return found


def student_version(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of a solution notebook (a new notebook; ``notebook`` is not changed).

    Solution regions become the stubs, hidden-test regions go, a solution cell
    without a region is replaced whole (as nbgrader does), outputs, execution
    counts and run timestamps are cleared. ``metadata.coursekit`` records
    ``name`` (the assignment, e.g. ``"01_transforms"``) and the kit's version,
    so the grader knows which solution a submission belongs to.

    Raises:
        MarkerError: a marker is misplaced, or a region lies in a cell not marked as a solution.
    """
    student = copy.deepcopy(notebook)
    for index, cell in enumerate(student.cells):
        where = f"{name}.ipynb, cell {index} (id {cell.get('id', '?')})"
        stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
        cell.source, solutions = replace_regions(cell.source, SOLUTION, stub, where)
        cell.source, _ = replace_regions(cell.source, HIDDEN_TESTS, (), where)
        is_solution = bool(_nbgrader(cell).get("solution"))
        if solutions and not is_solution:
            raise MarkerError(f"{where}: a solution region in a cell whose metadata.nbgrader does not mark it "
                              f"as a solution; mark it (solution: true, with a grade_id)")
        if is_solution and not solutions:
            cell.source = "\n".join(stub)
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    student.metadata.pop("widgets", None)
    student.metadata["coursekit"] = {"assignment": name, "kit_version": __version__}
    return student


def write_student(path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the student version of the solution notebook at ``path`` into ``out_dir`` (same file name).

    The file is written atomically; returns its path.
    """
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    return notebooks.write(student_version(notebook, path.stem), Path(out_dir) / path.name)
