"""The autograder: check cells overwritten, verdicts from the kernel protocol, hostile submissions contained."""
import csv
import tempfile
import time

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursekit import grading, notebooks, student
from coursekit.config import REPO_ROOT

BEGIN, END = student.SOLUTION
HIDDEN_BEGIN, HIDDEN_END = student.HIDDEN_TESTS
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# A tiny assignment whose checks are built from a real check module (coursekit.checks.report, NumPy only), so
# its kernels start fast. Each check would pass if the cheat aimed at it worked.
IMPORTS = "import numpy as np\nfrom coursekit.checks import report as checks\nfrom coursekit.checks.report import expect, run_student"
CHECK_A = 'checks.expect(checks.run_student("a()", a) == 1, "a() returns 1", 1, "another value", "return 1")\n' \
          'checks.passed("a")'
CHECK_B = (f'expect(run_student("b()", b) == 2, "b() returns 2", 2, "another value", "return 2")\n{HIDDEN_BEGIN}\n'
           f'expect(b() + 0 == 2, "b() + 0", 2, "another value", "return 2")\n{HIDDEN_END}\nchecks.passed("b")')


def _graded(source, grade_id, *, solution=False, grade=False, points=0, cell_type="code"):
    cell = (new_code_cell if cell_type == "code" else new_markdown_cell)(source)
    cell.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": not solution,
                                 "schema_version": 3, "task": False}
    if grade:
        cell.metadata["nbgrader"]["points"] = points
    return cell


def _tiny():
    """The instructor's notebook ``00_tiny``: two exercises, their checks (1 and 2 points), a written answer."""
    return new_notebook(cells=[
        new_markdown_cell("# 00 · tiny"),
        new_code_cell(IMPORTS),
        _graded(f"def a():\n    {BEGIN}\n    return 1\n    {END}", "ex_a", solution=True),
        _graded(CHECK_A, "check_a", grade=True, points=1),
        _graded(f"def b():\n    {BEGIN}\n    return 2\n    {END}", "ex_b", solution=True),
        _graded(CHECK_B, "check_b", grade=True, points=2),
        _graded(f"{BEGIN}\nBecause.\n{END}", "answer", solution=True, grade=True, points=1, cell_type="markdown"),
    ])


def _index(notebook, grade_id):
    return next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _submission(solution, name, solved=(), edit=None, insert=None, delete=()):
    """The student version of ``solution`` with the exercises ``solved`` solved (their solution source), the cells
    ``edit`` ({grade_id: source}) rewritten, a cell inserted after each of ``insert`` ({grade_id: source}) and the
    cells ``delete`` removed."""
    notebook = student.student_version(solution, name)
    for grade_id in solved:
        notebook.cells[_index(notebook, grade_id)].source = solution.cells[_index(solution, grade_id)].source
    for grade_id, source in (edit or {}).items():
        notebook.cells[_index(notebook, grade_id)].source = source
    for grade_id, source in (insert or {}).items():
        notebook.cells.insert(_index(notebook, grade_id) + 1, new_code_cell(source))
    notebook.cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in delete]
    return notebook


def _statuses(result):
    return {check.grade_id: check.status for check in result.checks}


# --- the notebook that runs -----------------------------------------------------------------------------------------

def test_overwrite_restores_check_cells_and_keeps_the_students_work():
    solution = _tiny()
    submission = _submission(solution, "00_tiny", solved=("ex_a",), edit={"check_a": 'print("check passed: a")'},
                             delete=("check_b",))
    submission.cells.insert(2, new_code_cell(CHECK_A))  # an unmarked copy of a check stays the student's own code
    submission.cells.append(submission.cells[_index(submission, "check_a")].copy())  # a second marked copy goes
    answer = submission.cells[_index(submission, "answer")]
    answer.source = "My own answer."
    merged = grading.overwrite(submission, solution)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in merged.cells]
    assert ids == [None, None, None, "ex_a", "check_a", "ex_b", "check_b", "answer"]
    assert merged.cells[4].source == CHECK_A, "an edited check cell runs the instructor's source"
    assert merged.cells[6].source == CHECK_B and HIDDEN_BEGIN in CHECK_B, "a deleted one is back, hidden tests in"
    assert merged.cells[3].source == solution.cells[2].source, "exercise cells are the student's"
    assert merged.cells[7].source == "My own answer.", "written answers are the student's"
    assert submission.cells[_index(submission, "check_a")].source == 'print("check passed: a")', "input unchanged"


def test_a_deleted_check_goes_to_the_end_when_nothing_before_it_is_left():
    solution = _tiny()
    submission = new_notebook(cells=[new_code_cell("x = 1")])
    merged = grading.overwrite(submission, solution)
    assert [c.source for c in merged.cells] == ["x = 1", CHECK_A, CHECK_B]


def test_check_imports_keeps_only_the_statements_that_bind_check_modules():
    notebook = new_notebook(cells=[
        new_markdown_cell("from coursekit.checks import transforms"),
        new_code_cell("%matplotlib inline\nimport numpy as np, coursekit.checks.report as r\n"
                      "from coursekit import config, checks\nfrom coursekit.checks.transforms import check_random_flip"),
        new_code_cell("def helper():\n    from coursekit.checks import backprop\nfrom coursekit.checks import report"),
        new_code_cell("this is not python"),
    ])
    assert grading.check_imports(notebook).splitlines() == [
        "import coursekit.checks.report as r", "from coursekit import checks",
        "from coursekit.checks.transforms import check_random_flip", "from coursekit.checks import report"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_course_notebook_imports_its_check_module_as_checks(path):
    assignment = grading.load_solutions(path.parent)[path.stem]
    assert assignment.imports.startswith("from coursekit.checks import ") and assignment.imports.endswith(" as checks")
    assert assignment.checks and all(part.kind == "check" for part in assignment.checks)


def test_verdicts_come_from_the_reply_status():
    assert grading.verdict({"status": "ok"}, 1.0, 10) == ("passed", "")
    failed = {"status": "error", "ename": "CheckFailed", "evalue": "what\n  expected: 1\n  got:      2\n  hint: h"}
    assert grading.verdict(failed, 1.0, 10) == ("failed", failed["evalue"])
    assert grading.verdict({"status": "error", "ename": "NameError", "evalue": "name 'b' is not defined"}, 1.0, 10) \
        == ("error", "NameError: name 'b' is not defined")
    assert grading.verdict({"status": "error", "ename": "KeyboardInterrupt", "evalue": ""}, 10.5, 10) \
        == ("error", "the cell ran longer than 10 s and was interrupted")


def test_read_results_skips_torn_and_unsigned_lines_and_keeps_the_first_verdict(tmp_path):
    key, path = b"k" * 32, tmp_path / "results.jsonl"
    lines = ['{"kernel_pid": 12}', '{"grade_id": "c", "status": "failed", "message": "m"}', '{"kernel_pid": 1}',
             '{"grade_id": "c", "status": "passed", "message": ""}', '{"grade_id": "d", "status": "great"}', '[1]',
             '{"stopped": "the kernel died"}']
    other = '{"grade_id": "g", "status": "passed", "message": ""}'
    forged = ['{"grade_id": "f", "status": "passed", "message": ""}',  # unsigned
              f'{grading.sign(b"x" * 32, other)} {other}']  # signed with another key
    text = "".join(f"{grading.sign(key, line)} {line}\n" for line in lines)
    path.write_text("\n".join(forged) + "\n" + text + f'{grading.sign(key, "{}")[:20]} {{"grade_id": "e", "sta')
    assert grading.read_results(path, key) == {"verdicts": {"c": {"status": "failed", "message": "m"}},
                                               "kernel_pid": 12, "stopped": "the kernel died", "finished": False}
    assert grading.read_results(path, b"y" * 32)["verdicts"] == {}, "the key decides"
    assert grading.read_results(tmp_path / "missing.jsonl", key)["verdicts"] == {}


# --- finding and matching submissions -------------------------------------------------------------------------------

def test_submissions_are_found_flat_and_in_student_folders(tmp_path):
    for name in ("zed.ipynb", "alice/01_transforms.ipynb", "alice/.ipynb_checkpoints/x.ipynb", ".hidden.ipynb",
                 "notes.txt", "bob/02_backprop (1).ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert grading.find_submissions(tmp_path) == [("alice", tmp_path / "alice/01_transforms.ipynb"),
                                                  ("bob", tmp_path / "bob/02_backprop (1).ipynb"),
                                                  ("zed", tmp_path / "zed.ipynb")]


def test_matching_by_metadata_then_by_the_longest_stem_in_the_file_name(tmp_path):
    assignments = {name: name for name in ("01_transforms", "01_transforms_extra", "02_backprop")}
    tagged = new_notebook(metadata={"coursekit": {"assignment": "02_backprop"}})
    assert grading.match(tagged, tmp_path / "01_transforms.ipynb", assignments) == "02_backprop"
    plain = new_notebook()
    assert grading.match(plain, tmp_path / "my_01_transforms_extra.ipynb", assignments) == "01_transforms_extra"
    assert grading.match(plain, tmp_path / "homework.ipynb", assignments) is None


@pytest.mark.parametrize("problem, match", [
    ("no solutions", "no such folder of solution notebooks"),
    ("empty solutions", "no solution notebooks"),
    ("no submissions", "no submissions"),
    ("bad profile", "is not one of"),
])
def test_bad_input_is_a_one_line_grading_error(tmp_path, problem, match):
    solutions, submissions = tmp_path / "solutions", tmp_path / "submissions"
    submissions.mkdir()
    if problem != "no solutions":
        solutions.mkdir()
    if problem not in ("no solutions", "empty solutions"):
        notebooks.write(_tiny(), solutions / "00_tiny.ipynb")
    if problem == "bad profile":
        notebooks.write(_tiny(), submissions / "00_tiny.ipynb")
    with pytest.raises(grading.GradingError, match=match) as error:
        grading.grade(submissions, solutions, tmp_path / "grades.csv", profile="fast" if problem == "bad profile"
                      else "ci", progress=False)
    assert "\n" not in str(error.value)


# --- hostile submissions, all in one run with honest ones -----------------------------------------------------------

REDEFINE_A = "import types\nchecks = types.SimpleNamespace(expect=lambda *a, **k: None, run_student=lambda *a, **k: 1, " \
             "passed=print)"
REDEFINE_B = "def run_student(*args, **kwargs):\n    return 2\n\n\ndef expect(*args, **kwargs):\n    pass"
PATCH_MODULE = "import coursekit.checks.report as report\nreport.run_student = lambda *args, **kwargs: 1"
PATCH_CODE = "run_student.__code__ = (lambda what, fn, *args, **kwargs: 2).__code__"
HOOKS = """\
import ast, sys
from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult

shell = get_ipython()
shell.input_transformers_post.append(lambda lines: [] if any("expect" in line for line in lines) else lines)


class Erase(ast.NodeTransformer):
    def visit_Module(self, node):
        return ast.Module(body=[], type_ignores=[]) if "expect" in ast.dump(node) else node


shell.ast_transformers.append(Erase())
shell.events.register("pre_run_cell", lambda info: shell.user_ns.update(checks=None, expect=print))
sys.displayhook = sys.excepthook = print
shell.run_cell = lambda raw_cell, *args, **kwargs: ExecutionResult(ExecutionInfo(raw_cell, False, True, True, None))
"""
# Called by the check itself: patch the freshly loaded check module while the check runs.
DURING_A = 'def a():\n    import sys\n    sys.modules["coursekit.checks.report"].fail = lambda *args, **kwargs: None\n' \
           '    return 0'
DURING_B = 'def b():\n    import sys\n    expect = sys.modules["coursekit.checks.report"].expect\n' \
           '    expect.__code__ = (lambda *args, **kwargs: None).__code__\n    return 0'
# Appends "passed" verdicts (bare, and behind a fake signature) to every results file it can find: beside its
# working folder and among the worker's open files.
FORGE = """\
import glob, json, os
lines = [json.dumps({"grade_id": g, "status": "passed", "message": ""}) for g in ("check_a", "check_b")]
text = "".join(f"{line}\\n{'0' * 64} {line}\\n" for line in lines)
parent = f"/proc/{os.getppid()}/fd"
targets = glob.glob(os.path.join(os.getcwd(), "..", "*.jsonl"))
targets += [os.path.realpath(os.path.join(parent, fd)) for fd in os.listdir(parent)]
for target in targets:
    if target.endswith(".jsonl"):
        with open(target, "a") as file:
            file.write(text)
forged = sum(target.endswith(".jsonl") for target in targets)
assert forged, targets
"""
LOOP = "while True:\n    pass"
STUBBORN = "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass"
HOG = "hog = []\nwhile True:\n    hog.append(b'x' * 50_000_000)"
CELL_TIMEOUT, TOTAL_TIMEOUT, MEMORY_MB = 5, 20, 3000  # a kernel with NumPy and the checks needs about 0.9 GB


def _hostile_run(tmp_path):
    solution = _tiny()
    solutions, submissions = tmp_path / "solutions", tmp_path / "submissions"
    notebooks.write(solution, solutions / "00_tiny.ipynb")
    cases = {
        "alice": solution,  # no metadata: matched by its file name
        "bob": _submission(solution, "00_tiny", solved=("ex_a",)),
        "cheat_redefine": _submission(solution, "00_tiny", insert={"ex_a": REDEFINE_A, "ex_b": REDEFINE_B}),
        "cheat_patch": _submission(solution, "00_tiny", insert={"ex_a": PATCH_MODULE, "ex_b": PATCH_CODE}),
        "cheat_cells": _submission(solution, "00_tiny", edit={"check_a": 'print("check passed: a")'},
                                   insert={"ex_a": 'print("check passed: a")', "ex_b": 'print("check passed: b")'},
                                   delete=("check_b",)),
        "cheat_hooks": _submission(solution, "00_tiny", insert={"ex_a": HOOKS}),
        "cheat_during": _submission(solution, "00_tiny", edit={"ex_a": DURING_A, "ex_b": DURING_B}),
        "cheat_results": _submission(solution, "00_tiny", insert={"ex_a": FORGE}),
        "crash_exit": _submission(solution, "00_tiny", solved=("ex_a",), edit={"ex_b": "import os\nos._exit(1)"}),
        "crash_kill": _submission(solution, "00_tiny", solved=("ex_a",),
                                  edit={"ex_b": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"}),
        "crash_loop": _submission(solution, "00_tiny", solved=("ex_a",), edit={"ex_b": LOOP}),
        "crash_memory": _submission(solution, "00_tiny", solved=("ex_a",), edit={"ex_b": HOG}),
        "crash_rmtree": _submission(solution, "00_tiny", solved=("ex_a", "ex_b"),
                                    insert={"check_a": "import os, shutil\nshutil.rmtree(os.getcwd())"}),
        "crash_stubborn": _submission(solution, "00_tiny", solved=("ex_a",), edit={"ex_b": STUBBORN}),
        "zoe": solution,
    }
    for name, notebook in cases.items():
        notebooks.write(notebook, submissions / name / "00_tiny.ipynb")
    (submissions / "garbage.ipynb").write_text("not a notebook")
    notebooks.write(new_notebook(cells=[new_code_cell("1")]), submissions / "carol" / "homework.ipynb")
    start = time.monotonic()
    results = grading.grade(submissions, solutions, tmp_path / "out" / "grades.csv", cell_timeout=CELL_TIMEOUT,
                            total_timeout=TOTAL_TIMEOUT, memory_mb=MEMORY_MB, progress=False)
    return {r.student: r for r in results}, time.monotonic() - start


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One grade() run of honest and hostile submissions of ``00_tiny``: ``(results by student, out folder, tmp)``."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))  # the workers' folders, to see that they are removed
        patch.setenv("COURSEKIT_DATA", str(tmp_path / "data"))
        results, seconds = _hostile_run(tmp_path)
    return results, tmp_path / "out", scratch, seconds


def test_honest_submissions_get_what_they_earned_next_to_hostile_ones(hostile):
    results, _, _, _ = hostile
    for name in ("alice", "zoe"):
        assert results[name].status == "graded" and (results[name].total, results[name].max) == (3, 3)
    assert results["alice"].assignment == "00_tiny"
    assert _statuses(results["bob"]) == {"check_a": "passed", "check_b": "failed"}
    assert "b() is not implemented yet" in results["bob"].checks[1].message


@pytest.mark.parametrize("name", ["cheat_redefine", "cheat_patch", "cheat_cells", "cheat_hooks", "cheat_during",
                                  "cheat_results"])
def test_replacing_editing_or_faking_the_checks_earns_nothing(hostile, name):
    result = hostile[0][name]
    assert result.total == 0, [(c.grade_id, c.status, c.message) for c in result.checks]
    assert result.status == "graded"


def test_what_each_cheat_is_told(hostile):
    results = hostile[0]
    assert _statuses(results["cheat_cells"]) == {"check_a": "failed", "check_b": "failed"}, \
        "the deleted check is back after its exercise"
    assert _statuses(results["cheat_results"]) == {"check_a": "failed", "check_b": "failed"}, "forgeries ignored"
    during = results["cheat_during"].checks
    assert [c.status for c in during] == ["error", "error"]
    assert "coursekit.checks.report.fail was changed while the check ran" in during[0].message
    assert "coursekit.checks.report.expect was changed while the check ran" in during[1].message


def test_crashes_loops_and_memory_keep_what_was_earned_before(hostile):
    results = hostile[0]
    for name in ("crash_exit", "crash_kill"):
        assert results[name].status.startswith("incomplete: the kernel died in cell 4")
        assert _statuses(results[name]) == {"check_a": "passed", "check_b": "error"}
        assert results[name].checks[1].message.startswith("not reached (the kernel died")
    loop = results["crash_loop"]
    assert loop.status == "graded" and _statuses(loop) == {"check_a": "passed", "check_b": "error"}
    assert "NameError" in loop.checks[1].message, "the loop was interrupted, the run went on"
    stubborn = results["crash_stubborn"]
    assert stubborn.status == f"incomplete: the time limit of {TOTAL_TIMEOUT} s was reached"
    assert _statuses(stubborn) == {"check_a": "passed", "check_b": "error"}
    assert stubborn.checks[1].message == f"not reached (the time limit of {TOTAL_TIMEOUT} s was reached)"
    assert _statuses(results["crash_memory"]) == {"check_a": "passed", "check_b": "error"}
    assert results["crash_rmtree"].status == "graded" and results["crash_rmtree"].total == 3


def test_no_kernel_or_folder_outlives_the_run(hostile):
    _, _, scratch, _ = hostile
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(scratch) in part for part in process.info["cmdline"] or ()):
            leftovers.append(process)
    assert not [p for p in psutil.wait_procs(leftovers, timeout=5)[1]], "a worker or kernel is still running"
    assert list(scratch.iterdir()) == []


def test_unreadable_and_unmatched_submissions_are_rows(hostile):
    results = hostile[0]
    assert results["garbage"].status.startswith("unreadable: ")
    assert results["carol"].status.startswith("error: no solution matches it")
    assert results["carol"].assignment is None and results["carol"].checks == []


def test_the_gradebook_and_the_feedback(hostile):
    results, out, _, _ = hostile
    with open(out / "grades.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["student", "assignment", "check_a", "check_b", "answer", "total", "max", "status", "submission"]
    by_student = {row[0]: row for row in rows[1:]}
    assert len(by_student) == len(results)
    assert by_student["bob"] == ["bob", "00_tiny", "1", "0", "manual", "1", "3", "graded", "bob/00_tiny.ipynb"]
    assert by_student["garbage"][1:5] == ["", "", "", ""] and by_student["garbage"][5:7] == ["0", "0"]
    assert sorted(p.name for p in (out / "feedback").iterdir()) == sorted(
        f"{r.student}-{r.assignment or r.submission.stem}.txt" for r in results.values())
    feedback = (out / "feedback" / "bob-00_tiny.txt").read_text()
    assert "score: 1 / 3 points from the checks" in feedback
    assert "check_a (1 point): passed" in feedback and "check_b (2 points): failed" in feedback
    assert "    b() is not implemented yet\n      expected: your implementation" in feedback
    assert "written answers, to be graded by hand:\n  answer (1 point)" in feedback
    assert "not reached (the time limit" in (out / "feedback" / "crash_stubborn-00_tiny.txt").read_text()


# --- the real notebook 01 in the ci profile -------------------------------------------------------------------------

def test_notebook_01_solution_full_marks_student_version_none_one_exercise_its_check(tmp_path, data_root):
    solution = nbformat.read(REPO_ROOT / "notebooks" / "01_transforms.ipynb", as_version=4)
    submissions = tmp_path / "submissions"
    notebooks.write(solution, submissions / "solved" / "01_transforms.ipynb")
    notebooks.write(student.student_version(solution, "01_transforms"), submissions / "blank" / "01_transforms.ipynb")
    # Only RandomFlip solved: check_random_flip passes. check_pipelines needs the pipelines exercise and the three
    # transforms too, so no other check can pass.
    notebooks.write(_submission(solution, "01_transforms", solved=("random_flip",)), submissions / "flip_only.ipynb")
    results = {r.student: r for r in grading.grade(submissions, REPO_ROOT / "notebooks", tmp_path / "grades.csv",
                                                   progress=False)}
    checks = ["check_random_flip", "check_random_resize_crop", "check_joint_normalize", "check_pipelines"]
    solved, blank, flip = results["solved"], results["blank"], results["flip_only"]
    assert [(c.grade_id, c.status) for c in solved.checks] == [(c, "passed") for c in checks], solved.checks
    assert (solved.total, solved.max, solved.status) == (4, 4, "graded")
    assert blank.total == 0 and blank.status == "graded"
    assert _statuses(blank) == {"check_random_flip": "failed", "check_random_resize_crop": "failed",
                                "check_joint_normalize": "failed", "check_pipelines": "error"}
    assert flip.assignment == "01_transforms" and flip.total == 1
    assert _statuses(flip)["check_random_flip"] == "passed"
    assert [w.grade_id for w in flip.written] == ["answer_q1", "answer_q2", "answer_q3", "answer_q4"]
