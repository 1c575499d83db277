"""Offline autograding of submitted course notebooks: a gradebook CSV and one feedback file per submission.

``grade(submissions, solutions, out)`` runs every submitted notebook against
the instructor's solution notebook of its assignment, as nbgrader's
``autograde`` does with its ``OverwriteCells`` step:

* the submission's own cells run in its own order, except that every cell the
  solution marks as a check (``metadata.nbgrader.grade``) or as locked is
  replaced by the instructor's cell (matched by ``grade_id``, else by cell
  id), hidden-test regions included; a check cell the student deleted is put
  back right after the cell that came before it in the solution. Editing or
  deleting a check cell therefore changes nothing.
* a check earns its points when its cell's ``execute_reply`` (the kernel
  protocol's answer, not anything printed) says ``ok``. A reply with
  ``CheckFailed`` (or another ``AssertionError``) is *failed*, any other
  exception is an *error*; checks never reached (the kernel died, the time ran
  out) are *error: not reached (why)*. Written answers are listed for grading
  by hand.

Isolation and threat model
--------------------------
A submission is untrusted code. Each one runs in its own worker process
(``work``, in a new Python), started in a new session, in a fresh
temporary folder that holds a copy of the notebook and is its working folder
and ``COURSEKIT_HOME`` (``COURSEKIT_DATA`` lists the caller's data roots, so
data is still found). The worker lowers its address-space limit
(``RLIMIT_AS``, inherited by the kernel it starts) and runs the kernel with
nbclient: a cell past ``cell_timeout`` seconds is interrupted, an error does
not stop the run, and each check's verdict is appended to a results file
(outside the working folder) the moment it is known, so whatever happens later
loses nothing already earned. Each line of that file carries an HMAC under a
key that the grader hands the worker through a pipe and the kernel never gets,
so lines the submission writes there are ignored. The parent kills the worker's and the kernel's
process groups after ``total_timeout`` seconds. The kernel gets its own
IPython and Jupyter folders and no user site-packages, so a submission cannot
leave startup code for the next one.

Defended, and tested with crafted submissions: endless loops (also ones that
catch ``KeyboardInterrupt``: the wall-clock kill), exhausting memory
(``MemoryError`` or a dead kernel), crashing or killing the kernel, deleting
the working folder or the notebook, editing, deleting or moving check cells,
printing ``check passed:`` lines, appending forged verdicts to the results file, and replacing
the checks: redefining
``checks`` or an imported check function, monkeypatching a function of a
``coursekit.checks`` module or its ``__code__``, input or AST transformers,
cell event callbacks, ``sys.displayhook``/``excepthook``, import hooks, trace
functions, or IPython methods patched on the shell or kernel object. Before
each check the grader (through a user expression of the kernel protocol,
which no cell transformer or event sees) restores what it recorded before the
first submission cell, deletes every ``coursekit.checks*`` module and
re-executes the solution's own imports of them, so the check runs from freshly
loaded modules; after the check it verifies that nothing in those modules was
changed while the check ran (by student code the check called, or a thread).

Not defended: code written to attack the grader itself. A submission runs with
the grader's user rights, so it can patch the libraries a check relies on
(torch, NumPy), the import system's internals or IPython's and ipykernel's
classes, forge kernel replies, read the key from the worker's memory (where the
system lets a process trace its parent), tamper with the
kit's own files or the shared data roots, use the disk, the network or other
processes (ones it starts in a new session outlive the kill), or delete files
outside its working folder. Run the grader as an unprivileged user without
network, in a container or VM, and read submissions whose results look odd.

Linux (POSIX) only: process groups and ``RLIMIT_AS``. ``RLIMIT_AS`` limits
address space, not resident memory: a kernel that imports torch and the kit
reserves about 4 GB of address space on a 2-core machine (it uses about 0.8 GB),
more with more cores; the kernel runs with ``MALLOC_ARENA_MAX=2`` (unless set)
to keep the reservations small. CUDA cannot start under an address-space
limit, so a limited kernel sees no GPU; ``memory_mb=None`` lifts the limit.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import csv
import hashlib
import hmac
import inspect
import io
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async
from tqdm.auto import tqdm

from . import config, student, tables, tempfiles

CHECK_PACKAGE = "coursekit.checks"
GRADED = "graded"
FAILURES = ("CheckFailed", "AssertionError")  # exception names that mean "the check failed", not "it broke"
MESSAGE_LIMIT = 2000  # characters of a check's message kept in the feedback
GUARD = "__import__('sys').modules['__coursekit_grader__'].guard()"
VERIFY = "__import__('sys').modules['__coursekit_grader__'].verify()"
# The worker's command. jsonschema (under nbformat) builds a grammar for an optional format check on import,
# a second per worker for a check nbformat never makes; the worker skips that module.
WORKER = ("import sys; sys.modules['rfc3987_syntax'] = None; from coursekit.grading import work; "
          "sys.exit(work(sys.argv[1]))")


class GradingError(ValueError):
    """Bad input for the grader (no submissions, no solutions folder, ...); the message is one line."""


@dataclass(frozen=True)
class Check:
    """The verdict of one check cell.

    Attributes:
        grade_id: the check cell's nbgrader ``grade_id``.
        points: what the check is worth.
        status: ``"passed"``, ``"failed"`` (``CheckFailed``/``AssertionError``) or ``"error"``.
        message: the failure's text, the exception line, or ``"not reached (why)"``; empty when passed.
    """

    grade_id: str
    points: float
    status: str
    message: str = ""

    @property
    def earned(self) -> float:
        """The points earned: all of them when passed, else none."""
        return self.points if self.status == "passed" else 0.0


@dataclass
class Result:
    """The grading of one submission (one gradebook row).

    Attributes:
        student: the student's id (the submission's folder name, or its file stem).
        assignment: the matched solution's stem, or ``None``.
        submission: the notebook's path relative to the submissions folder.
        status: ``"graded"``, ``"incomplete: <why>"`` (checks not reached), ``"unreadable: <why>"``
            or ``"error: <why>"`` (no matching solution).
        checks: one verdict per check cell, in the solution's order.
        written: the written answers (graded by hand).
        feedback: the feedback file written for it.
    """

    student: str
    assignment: str | None
    submission: Path
    status: str
    checks: list[Check] = field(default_factory=list)
    written: tuple[student.Part, ...] = ()
    feedback: Path | None = None

    @property
    def total(self) -> float:
        """Points earned from the checks."""
        return sum(check.earned for check in self.checks)

    @property
    def max(self) -> float:
        """Points the checks are worth (written answers are added by hand)."""
        return sum(check.points for check in self.checks)


@dataclass(frozen=True)
class Assignment:
    """A solution notebook as the grader uses it.

    Attributes:
        name: its stem, e.g. ``"01_transforms"``.
        notebook: the solution notebook.
        checks: its check cells (code, ``grade``, not a solution), in order.
        written: its parts graded by hand.
        imports: its statements that import ``coursekit.checks`` modules, re-run before every check.
    """

    name: str
    notebook: nbformat.NotebookNode
    checks: tuple[student.Part, ...]
    written: tuple[student.Part, ...]
    imports: str


@dataclass(frozen=True)
class Limits:
    """How a submission may run: seconds per cell and in all, address space (MiB, ``None``: no limit), profile."""

    cell_timeout: int
    total_timeout: int
    memory_mb: int | None
    profile: str


def grade(submissions: str | os.PathLike, solutions: str | os.PathLike, out: str | os.PathLike, *,
          cell_timeout: int = 120, total_timeout: int = 1800, memory_mb: int | None = 8192, profile: str = "ci",
          progress: bool = True) -> list[Result]:
    """Grade every submitted notebook; write the gradebook ``out`` and ``<out's folder>/feedback/``.

    Args:
        submissions: a folder of ``*.ipynb`` (student id: the file stem) and/or ``<student>/<name>.ipynb``.
        solutions: the folder of the instructor's solution notebooks.
        out: the gradebook CSV to write (``gradebook_rows`` gives its columns); rewritten after each submission.
        cell_timeout: seconds a cell may run before it is interrupted.
        total_timeout: seconds a submission may take in all before its processes are killed.
        memory_mb: address-space limit of the kernel in MiB (``None``: no limit, GPUs stay visible).
        profile: the ``COURSEKIT_PROFILE`` the notebooks run in.
        progress: show a progress bar over the submissions.

    Returns:
        One ``Result`` per submission, in the order of their paths.

    Raises:
        GradingError: an unknown profile, a missing or empty solutions or submissions folder, or an
            unreadable solution notebook.
    """
    if profile not in config.PROFILES:
        raise GradingError(f"profile {profile!r} is not one of {', '.join(config.PROFILES)}")
    out, submissions = Path(out), Path(submissions)
    if out.is_dir():
        raise GradingError(f"{out} is a folder; name the gradebook CSV file to write")
    assignments = load_solutions(solutions)
    found = find_submissions(submissions)
    limits = Limits(cell_timeout, total_timeout, memory_mb, profile)
    results: list[Result] = []
    bar = tqdm(found, desc="grading", unit="submission", disable=not progress)
    for student_id, path in bar:
        bar.set_postfix_str(f"{student_id}: {path.name}")
        result = grade_submission(student_id, path, submissions, assignments, limits)
        result.feedback = _feedback_path(result, out.parent / "feedback", results)
        tempfiles.write_text(result.feedback, feedback_text(result))
        results.append(result)
        write_gradebook(results, out)
    return results


def find_submissions(folder: Path) -> list[tuple[str, Path]]:
    """``(student id, path)`` of every submitted notebook, sorted by path; hidden files and folders are skipped.

    Raises:
        GradingError: the folder is missing or holds no notebook.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"{folder}: no such folder of submissions")
    found = []
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        if path.is_dir():
            found += [(path.name, nb) for nb in sorted(path.glob("*.ipynb")) if not nb.name.startswith(".")]
        elif path.suffix == ".ipynb":
            found.append((path.stem, path))
    if not found:
        raise GradingError(f"{folder}: no submissions (*.ipynb or <student>/<name>.ipynb) found")
    return found


def load_solutions(folder: str | os.PathLike) -> dict[str, Assignment]:
    """The solution notebooks of ``folder`` by stem.

    Raises:
        GradingError: the folder is missing, holds no notebook, or one is not a readable nbgrader notebook.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"{folder}: no such folder of solution notebooks")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise GradingError(f"{folder}: no solution notebooks (*.ipynb) in it")
    return {path.stem: _assignment(path) for path in paths}


def _assignment(path: Path) -> Assignment:
    """The ``Assignment`` of the solution notebook at ``path``."""
    try:
        notebook = nbformat.read(path, as_version=4)
        found = student.parts(notebook)
    except Exception as exc:  # noqa: BLE001 (any reason the instructor's file cannot be used)
        raise GradingError(f"{path}: not a readable solution notebook ({_line(exc)})") from None
    checks = tuple(p for p in found if p.kind == "check" and _protected(notebook.cells[p.index]))
    written = tuple(p for p in found if p.kind != "exercise" and p not in checks)
    return Assignment(path.stem, notebook, checks, written, check_imports(notebook))


def _line(exc: BaseException) -> str:
    """``'ValueError: first line of the message'``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _grade_id(cell) -> str | None:
    value = _nbgrader(cell).get("grade_id")
    return value if isinstance(value, str) and value else None


def _protected(cell) -> bool:
    """Whether the instructor's ``cell`` overrides the submission's: a code cell, not a solution, graded or locked.

    This is nbgrader's ``is_locked``; written answers (solution cells) stay the student's.
    """
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and not meta.get("solution") and bool(meta.get("grade") or meta.get("locked"))


def _is_check_module(name: str) -> bool:
    return name == CHECK_PACKAGE or name.startswith(CHECK_PACKAGE + ".")


def check_imports(notebook: nbformat.NotebookNode) -> str:
    """The notebook's top-level statements that import ``coursekit.checks`` modules, reduced to those names.

    ``from coursekit.checks import transforms as checks`` is kept as it is;
    ``import numpy as np, coursekit.checks.report as r`` becomes
    ``import coursekit.checks.report as r``. Magics are understood (IPython's
    transformer), cells that still do not parse are skipped.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    transformer, statements = TransformerManager(), []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(transformer.transform_cell(cell.source))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [alias for alias in node.names if _is_check_module(alias.name)]
                statement = ast.Import(names=names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = node.names if _is_check_module(node.module) else [
                    alias for alias in node.names if f"{node.module}.{alias.name}" == CHECK_PACKAGE]
                statement = ast.ImportFrom(module=node.module, names=names, level=0)
            else:
                continue
            if names:
                statements.append(ast.unparse(statement))
    return "\n".join(dict.fromkeys(statements))


def match(notebook: nbformat.NotebookNode, path: Path, assignments: dict[str, Assignment]) -> Assignment | None:
    """The assignment of a submission: its ``metadata.coursekit.assignment``, else the longest solution stem in
    its file name; ``None`` when neither names one."""
    meta = notebook.metadata.get("coursekit")
    name = meta.get("assignment") if isinstance(meta, dict) else None
    if isinstance(name, str) and name in assignments:
        return assignments[name]
    stems = [stem for stem in assignments if stem in path.name]
    return assignments[max(stems, key=len)] if stems else None


def _fresh(cell) -> nbformat.NotebookNode:
    """A copy of ``cell`` without outputs."""
    cell = copy.deepcopy(cell)
    if cell.get("cell_type") == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def _position(cells: list, target) -> int | None:
    """The index of the first of ``cells`` with ``target``'s grade_id, else its cell id; ``None`` if none has."""
    grade_id, cell_id = _grade_id(target), target.get("id")
    for index, cell in enumerate(cells):
        if (grade_id and _grade_id(cell) == grade_id) or (cell_id and cell.get("id") == cell_id):
            return index
    return None


def overwrite(submission: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook to run: the submission's cells with the solution's protected cells in force.

    Every submission cell that has the ``grade_id`` (else the cell id) of a
    protected solution cell (``_protected``: checks and locked code) is replaced
    by a copy of that solution cell; a second copy of one is dropped. A protected
    cell missing from the submission is inserted after the submission cell
    that matches the nearest solution cell before it (at the end if none
    does). Neither notebook is changed.
    """
    protected = [cell for cell in solution.cells if _protected(cell)]
    by_grade_id = {_grade_id(c): c for c in protected if _grade_id(c)}
    by_id = {c.get("id"): c for c in protected if c.get("id")}
    cells, placed = [], set()
    for cell in submission.cells:
        original = by_grade_id.get(_grade_id(cell)) or by_id.get(cell.get("id"))
        if original is None:
            cells.append(_fresh(cell))
        elif id(original) not in placed:
            placed.add(id(original))
            cells.append(_fresh(original))
    for index, original in enumerate(solution.cells):
        if _protected(original) and id(original) not in placed:
            anchors = (_position(cells, before) for before in reversed(solution.cells[:index]))
            anchor = next((a for a in anchors if a is not None), len(cells) - 1)
            cells.insert(anchor + 1, _fresh(original))
            placed.add(id(original))
    merged = copy.copy(submission)
    merged.cells = cells
    return merged


def _readable(path: Path) -> nbformat.NotebookNode:
    """The notebook at ``path``, each cell a dict with a known type and text source (else ``ValueError``)."""
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.get("cell_type") not in ("code", "markdown", "raw") or not isinstance(cell.get("source"), str):
            raise ValueError(f"cell {index} is not a notebook cell")
    return notebook


def grade_submission(student_id: str, path: Path, base: Path, assignments: dict[str, Assignment],
                     limits: Limits) -> Result:
    """Grade the one submission at ``path`` (see ``grade``); never raises for a bad or hostile notebook."""
    relative = path.relative_to(base)
    try:
        notebook = _readable(path)
    except Exception as exc:  # noqa: BLE001 (nbformat raises many kinds for a broken file)
        return Result(student_id, None, relative, f"unreadable: {_line(exc)}")
    assignment = match(notebook, path, assignments)
    if assignment is None:
        return Result(student_id, None, relative, f"error: no solution matches it (metadata.coursekit.assignment "
                                                  f"and the file name name none of {', '.join(assignments)})")
    verdicts, reason = run_submission(overwrite(notebook, assignment.notebook), assignment, path, limits)
    checks = [_check(part, verdicts.get(part.grade_id), reason) for part in assignment.checks]
    status = GRADED if reason is None else f"incomplete: {reason}"
    return Result(student_id, assignment.name, relative, status, checks, assignment.written)


def _check(part: student.Part, verdict: dict | None, reason: str | None) -> Check:
    """The ``Check`` of ``part`` from the worker's verdict line, or "not reached"."""
    if verdict is None:
        return Check(part.grade_id, part.points, "error", f"not reached ({reason or 'the cell was not run'})")
    return Check(part.grade_id, part.points, verdict["status"], verdict["message"][:MESSAGE_LIMIT])


def _job_cells(notebook: nbformat.NotebookNode, assignment: Assignment) -> tuple[list[dict], dict[str, str]]:
    """The code cells to run (``{"source", "label"}``) and ``{index among them: check grade_id}``."""
    check_ids = {part.grade_id for part in assignment.checks}
    cells, checks = [], {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if _grade_id(cell) in check_ids:
            checks[str(len(cells))] = _grade_id(cell)
        cells.append({"source": cell.source, "label": f"cell {index} (id {cell.get('id', '?')})"})
    return cells, checks


def _worker_env(root: Path, work: Path, limits: Limits) -> dict[str, str]:
    """The worker's (and so the kernel's) environment: the caller's, with the kit and Jupyter pointed into ``root``."""
    env = {
        **os.environ,
        "COURSEKIT_PROFILE": limits.profile,
        "COURSEKIT_HOME": str(work / ".coursekit"),
        "COURSEKIT_DATA": os.pathsep.join(str(r) for r in config.data_roots()),
        "IPYTHONDIR": str(root / "ipython"),
        "JUPYTER_CONFIG_DIR": str(root / "jupyter" / "config"),
        "JUPYTER_DATA_DIR": str(root / "jupyter" / "data"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter" / "runtime"),
        "TMPDIR": str(root / "tmp"),
        "PYTHONNOUSERSITE": "1",
    }
    env.setdefault("MALLOC_ARENA_MAX", "2")
    if limits.memory_mb:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if config.is_checkout():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(config.REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _kill_group(pgid: int | None) -> None:
    """SIGKILL the process group ``pgid`` if it still exists (never this process's own group)."""
    if pgid and pgid > 1 and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def run_submission(notebook: nbformat.NotebookNode, assignment: Assignment, path: Path,
                   limits: Limits) -> tuple[dict[str, dict], str | None]:
    """Run ``notebook`` (``overwrite``'s result of the submission at ``path``) in a worker process, in a fresh
    temporary folder that is removed afterwards; see the module's docstring.

    Returns:
        ``({grade_id: {"status", "message"}}, reason)``: the verdicts recorded, and why the run did not
        reach its end (``None`` when it did).
    """
    cells, checks = _job_cells(notebook, assignment)
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        work = root / "work"
        for folder in (work, root / "tmp"):
            folder.mkdir()
        shutil.copyfile(path, work / path.name)
        job = {"cells": cells, "checks": checks, "imports": assignment.imports, "workdir": str(work),
               "results": str(root / "results.jsonl"), "cell_timeout": limits.cell_timeout,
               "memory_mb": limits.memory_mb}
        (root / "job.json").write_text(json.dumps(job))
        lines, code = _run_worker(root, _worker_env(root, work, limits), limits.total_timeout)
        if lines["finished"] and code == 0:
            return lines["verdicts"], None
        if lines["stopped"]:
            return lines["verdicts"], lines["stopped"]
        if code is None:
            return lines["verdicts"], f"the time limit of {limits.total_timeout} s was reached"
        return lines["verdicts"], f"the grading worker ended with exit code {code}{_last_line(root / 'worker.log')}"


def _run_worker(root: Path, env: dict[str, str], timeout: int) -> tuple[dict, int | None]:
    """Run the worker of ``root/job.json`` for at most ``timeout`` seconds, then kill whatever is left of it.

    Returns:
        ``(read_results(...), exit status)``; the status is ``None`` when the time ran out.
    """
    code, key = None, secrets.token_bytes(32)
    with open(root / "worker.log", "wb") as log:
        worker = subprocess.Popen([sys.executable, "-c", WORKER, str(root / "job.json")], cwd=root / "work", env=env,
                                  stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        with contextlib.suppress(OSError):  # a worker that died at once is reported by its exit status
            worker.stdin.write(key.hex().encode() + b"\n")
            worker.stdin.close()
        code = worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _kill_group(worker.pid)  # the worker is not reaped yet, so its group id cannot have been reused
        worker.wait()
        lines = read_results(root / "results.jsonl", key)
        if code != 0 or not lines["finished"]:  # else nbclient has killed the kernel's group itself
            _kill_group(lines["kernel_pid"])
    return lines, code


def _last_line(log: Path) -> str:
    """``': <the last line of log>'`` (shortened), or ``''`` for an empty log."""
    with contextlib.suppress(OSError):
        lines = log.read_text(errors="replace").strip().splitlines()
        if lines:
            return f": {lines[-1][:200]}"
    return ""


def sign(key: bytes, text: str) -> str:
    """The HMAC-SHA256 of ``text`` (UTF-8) under ``key``, as 64 hex digits: what authenticates a results line."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def read_results(path: Path, key: bytes) -> dict:
    """What a worker recorded: ``{"verdicts": {grade_id: {"status", "message"}}, "kernel_pid", "stopped",
    "finished"}``. Each line is ``<sign(key, json)> <json>``; lines whose signature is wrong (written by someone
    else) or that do not parse (a write cut short) are skipped; the first verdict of a check counts."""
    found = {"verdicts": {}, "kernel_pid": None, "stopped": None, "finished": False}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            mac, _, text = line.partition(" ")
            if not hmac.compare_digest(mac.encode(), sign(key, text).encode()):
                continue
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("grade_id"), str) and entry.get("status") in ("passed", "failed", "error"):
                found["verdicts"].setdefault(entry["grade_id"], {"status": entry["status"],
                                                                 "message": str(entry.get("message", ""))})
            elif isinstance(entry.get("kernel_pid"), int):  # the worker's first line, before any student code
                found["kernel_pid"] = found["kernel_pid"] or entry["kernel_pid"]
            elif isinstance(entry.get("stopped"), str):
                found["stopped"] = found["stopped"] or entry["stopped"]
            elif entry.get("finished") is True:
                found["finished"] = True
    return found


def _points(value: float) -> str:
    return f"{value:g}"


def gradebook_rows(results: list[Result]) -> list[list[str]]:
    """The gradebook: a header, then one row per result.

    Columns: ``student``, ``assignment``, every check grade_id (points earned) and written grade_id
    (``manual``) of the assignments graded, in order of first appearance, ``total`` and ``max`` (of the
    checks), ``status``, ``submission``. A row leaves the parts of other assignments empty.
    """
    parts = [p.grade_id for r in results for p in (*r.checks, *r.written)]
    columns = list(dict.fromkeys(parts))
    rows = [["student", "assignment", *columns, "total", "max", "status", "submission"]]
    for result in results:
        values = {check.grade_id: _points(check.earned) for check in result.checks}
        values.update({part.grade_id: "manual" for part in result.written})
        rows.append([result.student, result.assignment or "", *(values.get(c, "") for c in columns),
                     _points(result.total), _points(result.max), result.status, result.submission.as_posix()])
    return rows


def write_gradebook(results: list[Result], path: Path) -> Path:
    """Write ``gradebook_rows(results)`` as CSV to ``path``, atomically; returns the path."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(gradebook_rows(results))
    return tempfiles.write_text(path, buffer.getvalue())


def format_results(results: list[Result]) -> str:
    """The grading's summary table: student, assignment, points of the checks, status."""
    rows = [(r.student, r.assignment or "-", f"{_points(r.total)} / {_points(r.max)}", r.status) for r in results]
    return tables.format_table(("student", "assignment", "checks", "status"), rows, right=(2,))


def _plural(points: float) -> str:
    return f"{_points(points)} point{'' if points == 1 else 's'}"


def feedback_text(result: Result) -> str:
    """The short feedback for a student: each check with its verdict and message, the written answers."""
    lines = [f"student: {result.student}", f"assignment: {result.assignment or '-'}",
             f"submission: {result.submission.as_posix()}", f"status: {result.status}"]
    if result.checks:
        lines += [f"score: {_points(result.total)} / {_points(result.max)} points from the checks", "", "checks:"]
    for check in result.checks:
        lines.append(f"  {check.grade_id} ({_plural(check.points)}): {check.status}")
        lines += [f"    {line}" for line in check.message.splitlines()]
    if result.written:
        lines += ["", "written answers, to be graded by hand:"]
        lines += [f"  {part.grade_id} ({_plural(part.points)})" for part in result.written]
    return "\n".join(lines) + "\n"


def _feedback_path(result: Result, folder: Path, earlier: list[Result]) -> Path:
    """``folder/<student>-<assignment or file stem>.txt``, with ``-2``, ``-3``, ... if an earlier result has it."""
    stem = f"{result.student}-{result.assignment or result.submission.stem}"
    taken = {r.feedback for r in earlier}
    path, number = folder / f"{stem}.txt", 1
    while path in taken:
        number += 1
        path = folder / f"{stem}-{number}.txt"
    return path


# --- the worker (runs in its own process; the kernel is its child) -------------------------------------------------

def _kernel_setup(imports: str, package: str) -> None:
    """Runs in the kernel before the first submission cell (sent as source, never called in the grader).

    Records the kernel's hooks and registers the module ``__coursekit_grader__``
    with ``guard()`` (restore them, reload the check modules, re-run
    ``imports``) and ``verify()`` (the reloaded modules are as loaded); both
    return ``'ok'`` or raise.
    """
    import builtins
    import importlib
    import os
    import sys
    import types

    from IPython import get_ipython

    import coursekit.checks

    shell = get_ipython()
    kit = os.path.dirname(os.path.realpath(coursekit.checks.__file__)) + os.sep
    kit_package, kit_path = sys.modules["coursekit"], list(sys.modules["coursekit"].__path__)
    manager = shell.input_transformer_manager
    attributes = [(builtins, "__import__"), (sys, "displayhook"), (sys, "excepthook"),
                  (shell, "input_transformer_manager")]
    attributes = [(owner, name, getattr(owner, name)) for owner, name in attributes]
    lists = [(manager, "cleanup_transforms"), (manager, "line_transforms"), (manager, "token_transformers"),
             (shell, "input_transformers_post"), (shell, "ast_transformers"), (sys, "meta_path"), (sys, "path_hooks")]
    lists = [(owner, name, getattr(owner, name), list(getattr(owner, name))) for owner, name in lists]
    events = {name: (callbacks, list(callbacks)) for name, callbacks in shell.events.callbacks.items()}
    instances = [(shell, set(vars(shell))), (shell.kernel, set(vars(shell.kernel)))]
    trace, profile, run, compile_ = sys.gettrace(), sys.getprofile(), exec, compile
    loaded = []

    def restore():
        for owner, name, value in attributes:
            setattr(owner, name, value)
        for owner, name, value, items in lists:
            setattr(owner, name, value)
            value[:] = items
        shell.events.callbacks.clear()
        for name, (callbacks, items) in events.items():
            callbacks[:] = items
            shell.events.callbacks[name] = callbacks
        for instance, names in instances:  # methods patched on the object itself
            for name in set(vars(instance)) - names:
                if isinstance(getattr(type(instance), name, None), types.FunctionType):
                    delattr(instance, name)
        sys.settrace(trace)
        sys.setprofile(profile)
        sys.modules["coursekit"] = kit_package
        kit_package.__path__[:] = kit_path

    def ours(name):
        return name == package or name.startswith(package + ".")

    def snapshot(value, owner):
        if isinstance(value, types.FunctionType):
            cells = []
            for cell in value.__closure__ or ():
                try:
                    cells.append(cell.cell_contents)
                except ValueError:
                    cells.append(None)
            return (value, value.__code__, value.__defaults__, *(value.__kwdefaults__ or {}).values(), *cells)
        if isinstance(value, type) and value.__module__ == owner:
            return (value, *vars(value).values())
        return (value,)

    def state(module):
        return {key: snapshot(value, module.__name__) for key, value in vars(module).items()
                if key != "__warningregistry__"}

    def guard():
        restore()
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        importlib.invalidate_caches()
        run(compile_(imports, "<coursekit grader: the solution's check imports>", "exec"), shell.user_ns)
        loaded[:] = [(name, module, state(module)) for name, module in list(sys.modules.items()) if ours(name)]
        for name, module, _ in loaded:
            where = os.path.realpath(getattr(module, "__file__", None) or "?")
            if not where.startswith(kit):
                raise ImportError(f"{name} was loaded from {where}, not from the kit ({kit})")
        return "ok"

    def verify():
        for name, module, saved in loaded:
            if sys.modules.get(name) is not module:
                raise RuntimeError(f"{name} was replaced while the check ran")
            now = state(module)
            for key in saved.keys() | now.keys():
                old, new = saved.get(key, ()), now.get(key, ())
                if not old and new and isinstance(new[0], types.ModuleType):
                    continue  # a submodule imported meanwhile
                if len(old) != len(new) or any(a is not b for a, b in zip(old, new)):
                    raise RuntimeError(f"{name}.{key} was changed while the check ran")
        return "ok"

    grader = types.ModuleType("__coursekit_grader__")
    grader.guard, grader.verify = guard, verify
    sys.modules["__coursekit_grader__"] = grader


def verdict(content: dict, seconds: float, cell_timeout: float) -> tuple[str, str]:
    """``(status, message)`` of a check from its execute_reply ``content`` and how long the cell ran."""
    if content.get("status") == "ok":
        return "passed", ""
    ename, evalue = str(content.get("ename", "error")), str(content.get("evalue", ""))
    if ename == "KeyboardInterrupt" and seconds >= cell_timeout:
        return "error", f"the cell ran longer than {cell_timeout} s and was interrupted"
    if ename in FAILURES:
        return "failed", evalue
    return "error", f"{ename}: {evalue}".strip().splitlines()[0]


class _Worker(NotebookClient):
    """nbclient's client for one submission: records each check's verdict, guards the checks, keeps no outputs."""

    def __init__(self, notebook: nbformat.NotebookNode, job: dict, results, key: bytes):
        super().__init__(notebook, timeout=job["cell_timeout"], interrupt_on_timeout=True, allow_errors=True,
                         kernel_name="python3", shutdown_kernel="immediate",
                         resources={"metadata": {"path": job["workdir"]}})
        self.job, self.results, self.key = job, results, key
        self.checks = {int(index): grade_id for index, grade_id in job["checks"].items()}
        self.current, self.started, self.guard_failure = -1, 0.0, None
        self.on_notebook_start = self._start
        self.on_cell_start = self._before
        self.on_cell_executed = self._after

    def record(self, **entry) -> None:
        """Append ``entry`` as a signed JSON line to the results file, on disk before this returns."""
        line = json.dumps(entry)
        self.results.write(f"{sign(self.key, line)} {line}\n")
        self.results.flush()
        os.fsync(self.results.fileno())

    def output(self, outs, msg, display_id, cell_index):
        """Keep no outputs: verdicts come from the replies, and a flood of prints must not fill the worker."""

    async def _reply(self, code: str, expression: str | None = None) -> dict:
        """Execute ``code`` silently (and evaluate ``expression``); the reply's content (``{}`` without reply)."""
        expressions = {"result": expression} if expression else {}
        msg_id = await ensure_async(self.kc.execute(code, silent=True, store_history=False,
                                                    user_expressions=expressions, stop_on_error=False))
        reply = await self.async_wait_for_reply(msg_id)
        return reply["content"] if reply else {}

    async def _expression(self, expression: str) -> str | None:
        """Evaluate ``expression`` as a user expression (no cell runs, so no transformer or event sees it);
        ``None`` if it returned ``'ok'``, else why not."""
        result = (await self._reply("", expression)).get("user_expressions", {}).get("result", {})
        if result.get("status") == "ok" and result.get("data", {}).get("text/plain") == "'ok'":
            return None
        return f"{result.get('ename', 'no answer')}: {result.get('evalue', 'the kernel did not evaluate it')}"

    async def _start(self, notebook) -> None:
        self.record(kernel_pid=self.km.provisioner.pid)
        setup = f"{inspect.getsource(_kernel_setup)}\n_kernel_setup({self.job['imports']!r}, {CHECK_PACKAGE!r})\n" \
                f"del _kernel_setup\n"
        content = await self._reply(setup)
        if content.get("status") != "ok":
            raise RuntimeError(f"the grader's setup failed in the kernel: {content.get('ename')}: "
                               f"{content.get('evalue')}")

    async def _before(self, cell, cell_index: int) -> None:
        self.current = cell_index
        if cell_index in self.checks:
            self.guard_failure = await self._expression(GUARD)
        self.started = time.monotonic()

    async def _after(self, cell, cell_index: int, execute_reply: dict) -> None:
        if cell_index not in self.checks:
            return
        status, message = verdict(execute_reply.get("content", {}), time.monotonic() - self.started,
                                  self.job["cell_timeout"])
        if self.guard_failure:
            status, message = "error", f"the grader could not reload the checks before it: {self.guard_failure}"
        elif status == "passed":
            changed = await self._expression(VERIFY)
            if changed:
                status, message = "error", f"the checks were tampered with while it ran: {changed}"
        self.record(grade_id=self.checks[cell_index], status=status, message=message)

    def where(self) -> str:
        """The label of the cell that was running."""
        return self.job["cells"][self.current]["label"] if self.current >= 0 else "the grader's setup"


def _limit_memory(memory_mb: int | None) -> None:
    """Lower this process's address-space limit (soft and hard) to ``memory_mb`` MiB; ``None``: no change."""
    if memory_mb:
        limit = int(memory_mb) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def work(job_path: str) -> int:
    """The worker's main: run the job's cells in a fresh kernel, recording as it goes; returns the exit status.

    The first line of stdin is the key that signs the results (hex); the kernel gets a stdin of its own.
    """
    key = bytes.fromhex(sys.stdin.readline().strip())
    sys.stdin.close()
    job = json.loads(Path(job_path).read_text())
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c["source"]) for c in job["cells"]])
    with open(job["results"], "a", encoding="utf-8") as results:
        client = _Worker(notebook, job, results, key)
        try:
            _limit_memory(job["memory_mb"])
            client.execute()
        except DeadKernelError:
            client.record(stopped=f"the kernel died in {client.where()} (it crashed, was killed or ran out of memory)")
        except Exception as exc:  # noqa: BLE001 (whatever stopped the run is why the rest was not reached)
            client.record(stopped=f"{_line(exc)} (in {client.where()})")
        else:
            client.record(finished=True)
    return 0
