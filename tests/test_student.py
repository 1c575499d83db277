"""Student versions: nothing of a solution survives, the layout is nbgrader's, and each exercise stops the student."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursekit import notebooks, student
from coursekit.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = student.SOLUTION


def _read(path):
    return nbformat.read(path, as_version=4)


def _solution_cell(source, cell_type="code", grade_id="ex"):
    make = new_code_cell if cell_type == "code" else new_markdown_cell
    cell = make(source)
    cell.metadata["nbgrader"] = {"solution": True, "grade": cell_type != "code", "grade_id": grade_id,
                                 "locked": False, "schema_version": 3, "task": False}
    return cell


def test_code_region_becomes_the_stub_at_the_marker_indentation():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nprint(f(1))"
    new, regions = student.replace_regions(source, student.SOLUTION, student.CODE_STUB, "nb, cell 1")
    assert regions == 1
    assert new == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f(1))"


def test_student_version_of_markdown_hidden_tests_and_outputs():
    notebook = new_notebook(cells=[
        new_markdown_cell("**Q1.** Why?"),
        _solution_cell(f"{BEGIN}\nBecause.\n{END}", "markdown", "answer_q1"),
        _solution_cell("secret = 42", grade_id="whole"),
        new_code_cell("assert True\n### BEGIN HIDDEN TESTS\nassert secret == 42\n### END HIDDEN TESTS\nprint('ok')",
                      execution_count=3, outputs=[nbformat.v4.new_output("stream", text="ok\n")]),
    ])
    notebook.cells[3].metadata["execution"] = {"iopub.status.idle": "2026-12-02T00:00:00Z"}
    out = student.student_version(notebook, "00_demo")
    assert [c.source for c in out.cells] == ["**Q1.** Why?", "YOUR ANSWER HERE",
                                             "# YOUR CODE HERE\nraise NotImplementedError()", "assert True\nprint('ok')"]
    assert out.cells[3].outputs == [] and out.cells[3].execution_count is None
    assert "execution" not in out.cells[3].metadata
    assert out.metadata["coursekit"]["assignment"] == "00_demo"
    assert notebook.cells[2].source == "secret = 42", "the solution notebook itself is not changed"


@pytest.mark.parametrize("source, problem", [
    (f"{BEGIN}\nx = 1\n{BEGIN}\ny = 2\n{END}\n{END}", "do not nest"),
    (f"x = 0\n{BEGIN}\nx = 1", "never closed"),
    (f"x = 1\n{END}", "without a"),
    (f"x = 1  {BEGIN}\nx = 2\n{END}", "on a line of its own"),
    ("The solution goes between `### BEGIN SOLUTION` and `### END SOLUTION`.", "on a line of its own"),
])
def test_misplaced_markers_name_the_notebook_and_cell(source, problem):
    notebook = new_notebook(cells=[new_markdown_cell("intro"), _solution_cell(source)])
    with pytest.raises(student.MarkerError, match=problem) as error:
        student.student_version(notebook, "00_demo")
    assert "00_demo.ipynb, cell 1" in str(error.value)


def test_region_outside_a_solution_cell_is_refused():
    notebook = new_notebook(cells=[new_code_cell(f"{BEGIN}\nx = 1\n{END}")])
    with pytest.raises(student.MarkerError, match="does not mark it as a solution"):
        student.student_version(notebook, "00_demo")


def _region_lines(notebook):
    """Lines inside solution regions that appear nowhere outside them (what a leak would show)."""
    inside, outside = set(), set()
    for cell in notebook.cells:
        within = False
        for line in cell.source.splitlines():
            if line.strip() in (BEGIN, END):
                within = line.strip() == BEGIN
            elif line.strip():
                (inside if within else outside).add(line.strip())
    return inside - outside


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_line_of_a_solution_survives(path, tmp_path):
    written = student.write_student(path, tmp_path)
    secret = _region_lines(_read(path))
    assert secret
    out = _read(written)
    lines = {line.strip() for cell in out.cells for line in cell.source.splitlines()}
    assert not secret & lines
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in out.cells if c.cell_type == "code")
    assert "widgets" not in out.metadata and out.metadata["coursekit"]["assignment"] == path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_has_nbgrader_metadata_and_a_check(path):
    """Solution cells carry nbgrader's metadata; each code exercise is followed by a locked check with points."""
    cells = _read(path).cells
    parts = student.parts(_read(path))
    assert len({p.grade_id for p in parts}) == len(parts), "grade_ids are unique"
    for index, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader", {})
        assert bool(meta.get("solution")) == (BEGIN in cell.source), f"cell {index}: solution metadata vs markers"
    for part in parts:
        if part.kind == "exercise":
            following = next(i for i in range(part.index + 1, len(cells)) if cells[i].cell_type == "code")
            check = cells[following].metadata.get("nbgrader", {})
            assert check.get("grade") and check.get("locked") and check.get("points", 0) > 0, part
            assert "checks.check_" in cells[following].source
        if part.kind == "written":
            assert cells[part.index].cell_type == "markdown" and part.points > 0


def test_nbgrader_generate_assignment_gives_the_same_student_cells(tmp_path):
    """nbgrader's own pipeline accepts the solution notebooks and makes the same student cells as the kit."""
    source = tmp_path / "source" / "course"
    source.mkdir(parents=True)
    for path in NOTEBOOKS:
        (source / path.name).write_bytes(path.read_bytes())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "course", "--force",
                           f"--CourseDirectory.root={tmp_path}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for path in NOTEBOOKS:
        theirs = _read(tmp_path / "release" / "course" / path.name)
        ours = student.student_version(_read(path), path.stem)
        assert [(c.cell_type, c.source) for c in ours.cells] == [(c.cell_type, c.source) for c in theirs.cells]


def _first_error(notebook):
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                return index, output
    return None, None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_notebook_stops_at_its_first_exercise_and_every_check_fails_on_its_stub(path, tmp_path):
    """Run the student version with errors allowed: nothing fails before the first exercise, that failure is
    the stub's NotImplementedError, and every check right after an exercise fails with the 'not implemented'
    message (a check that passed on a stub, or broke with another error, would fail here). An exercise written
    at the top level of its cell raises NotImplementedError there already, which is what the student sees."""
    notebook = student.student_version(_read(path), path.stem)
    last_check = max(p.index for p in student.parts(notebook) if p.kind == "check")
    notebook.cells = notebook.cells[:last_check + 1]  # what follows the last check teaches nothing here
    executed, _ = notebooks.run(notebooks.write(notebook, tmp_path / path.name), "ci", timeout=600,
                                allow_errors=True)
    parts = student.parts(executed)
    exercises = [p for p in parts if p.kind == "exercise"]
    index, error = _first_error(executed)
    assert index in (exercises[0].index, exercises[0].index + 1), f"first error in cell {index}: {error}"
    assert error.ename in ("NotImplementedError", "CheckFailed"), error
    assert error.ename == "NotImplementedError" or "not implemented" in error.evalue
    for exercise in exercises:
        own = [o for o in executed.cells[exercise.index].outputs if o.output_type == "error"]
        if own:
            assert own[0].ename == "NotImplementedError", (exercise.grade_id, own[0].ename)
            continue
        check = next(p for p in parts if p.kind == "check" and p.index > exercise.index)
        errors = [o for o in executed.cells[check.index].outputs if o.output_type == "error"]
        assert errors, f"{check.grade_id} passed on the stub"
        text = f"{errors[0].ename}: {errors[0].evalue}"
        assert "not implemented" in text or errors[0].ename == "NotImplementedError", (check.grade_id, text)
