import argparse
import re
import subprocess
import sys

import nbformat
import pytest

from coursekit import cli, notebooks


def test_parser_knows_the_commands():
    parser = cli.build_parser()
    assert parser.parse_args(["data", "--no-download"]).no_download
    args = parser.parse_args(["execute", "a.ipynb", "--profile", "cpu"])
    assert args.notebooks == ["a.ipynb"] and args.profile == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["execute", "a.ipynb", "--profile", "gpu"])
    assert parser.parse_args(["tolerances", "a.ipynb", "b.ipynb"]).notebooks == ["a.ipynb", "b.ipynb"]


def _notebook(path, *sources):
    """Write a notebook of code cells ``sources`` (default: one printing the profile) to ``path``; return it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in sources or ("import os\nprint(os.environ['COURSEKIT_PROFILE'])",)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return nb


def test_execute_stores_outputs_of_the_requested_profile(tmp_path, capsys):
    path = tmp_path / "tiny.ipynb"
    _notebook(path)
    assert cli.main(["execute", str(path), "--profile", "ci"]) == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs[0]["text"] == "ci\n" and cell.execution_count == 1
    assert "executed" in capsys.readouterr().out


def test_execute_rejects_unknown_profile(tmp_path):
    path = tmp_path / "tiny.ipynb"
    _notebook(path)
    with pytest.raises(ValueError, match="profile"):
        notebooks.execute(path, profile="gpu")


def test_failed_execution_leaves_the_notebook_untouched(tmp_path):
    path = tmp_path / "broken.ipynb"
    _notebook(path, "raise RuntimeError('boom')")
    before = path.read_text()
    with pytest.raises(Exception, match="boom"):
        notebooks.execute(path)
    assert path.read_text() == before


def _one_line_error(capsys, expected):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0], err
    return err[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    import coursekit
    assert capsys.readouterr().out.strip() == f"coursekit {coursekit.__version__} (coursekit-cv)"


def test_help_is_plain_text_and_describes_every_option(capsys):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in [parser, *subparsers.choices.values()]:
        for action in command._actions:
            assert action.help, f"{command.prog}: {action.dest} has no help"
        text = command.format_help()
        assert "``" not in text and ":func:" not in text, "reStructuredText markup in the help"
    assert set(subparsers.choices) == {"data", "execute", "tolerances", "build", "run", "student", "pdf",
                                      "grade", "pretrain"}
    assert "COURSEKIT_HOME" in parser.format_help() and "exit status" in parser.format_help()


def test_parsing_the_command_line_does_not_import_torch():
    probe = "import sys; from coursekit import cli; cli.build_parser().format_help(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_dataset_names_are_the_registrys():
    from coursekit.data import status

    assert cli.DATASET_NAMES == tuple(entry.key for entry in status.DATASETS)


def test_data_exits_1_when_a_requested_dataset_is_missing(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    assert cli.main(["data", "--no-download", "mnist"]) == 1
    captured = capsys.readouterr()
    assert "mnist" in captured.out and "missing" in captured.out
    assert captured.err.strip() == "coursekit: not usable: mnist (see the status column)"


def test_data_exits_0_when_every_requested_dataset_is_usable(data_root, monkeypatch, capsys):
    from coursekit.data import synthetic

    synthetic.write_mnist(data_root, n_train=20, n_test=10)
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    assert cli.main(["data", "--no-download", "mnist"]) == 0
    assert "ok" in capsys.readouterr().out


def test_unknown_dataset_and_bad_timeout_are_usage_errors(capsys):
    for argv in (["data", "imagenet"], ["execute", "a.ipynb", "--timeout", "-5"], ["execute", "a.ipynb", "--timeout", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    assert "not a dataset" in capsys.readouterr().err


def test_unknown_profile_or_synthetic_variable_is_one_line(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "fast")
    assert cli.main(["data", "--no-download"]) == 1
    _one_line_error(capsys, "COURSEKIT_PROFILE='fast' is not a profile")
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    monkeypatch.setenv("COURSEKIT_SYNTHETIC", "on")
    assert cli.main(["data", "--no-download"]) == 1
    _one_line_error(capsys, "COURSEKIT_SYNTHETIC='on' is not understood")


def test_missing_or_wrong_notebook_file_is_one_line(tmp_path, capsys):
    assert cli.main(["execute", str(tmp_path / "missing.ipynb")]) == 1
    _one_line_error(capsys, "missing.ipynb: no such notebook")
    (tmp_path / "notes.txt").write_text("hello")
    assert cli.main(["tolerances", str(tmp_path / "notes.txt")]) == 1
    _one_line_error(capsys, "not a notebook")


def test_failing_notebook_exits_1_naming_the_cell(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    nb = _notebook(path, "x = 1", "raise RuntimeError('boom')")
    nb.cells[1].id = "breaks"
    nbformat.write(nb, path)
    assert cli.main(["execute", str(path)]) == 1
    line = _one_line_error(capsys, "cell 1 (id breaks) raised RuntimeError: boom")
    assert line.startswith(f"coursekit: {path}")


def test_a_cell_past_the_timeout_fails_in_one_line(tmp_path, capsys):
    path = tmp_path / "slow.ipynb"
    _notebook(path, "import time\ntime.sleep(30)")
    before = path.read_text()
    assert cli.main(["execute", str(path), "--timeout", "1"]) == 1
    _one_line_error(capsys, "a cell ran longer than 1 s")
    assert path.read_text() == before


def test_a_missing_extra_is_named(tmp_path, monkeypatch, capsys):
    import coursekit

    _notebook(tmp_path / "tiny.ipynb")
    monkeypatch.setitem(sys.modules, "nbclient", None)
    monkeypatch.delitem(sys.modules, "coursekit.notebooks", raising=False)
    monkeypatch.delattr(coursekit, "notebooks", raising=False)
    assert cli.main(["execute", str(tmp_path / "tiny.ipynb")]) == 1
    _one_line_error(capsys, "pip install 'coursekit-cv[build]'")


def test_course_commands_parse_with_their_defaults():
    parser = cli.build_parser()
    args = parser.parse_args(["build", "--only", "01", "04_fcn", "--no-pdf"])
    assert args.only == ["01", "04_fcn"] and args.no_pdf and args.profile is None and args.out is None
    assert parser.parse_args(["student", "--out", "handout"]).out == "handout"
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--timeout", "soon"])


def test_student_writes_every_course_notebook_into_out(tmp_path, capsys):
    assert cli.main(["student", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted(p.name for p in (cli.config.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert capsys.readouterr().out.count("student version:") == len(written)


def test_only_names_an_unknown_notebook_in_one_line(tmp_path, capsys):
    assert cli.main(["student", "--only", "07", "--out", str(tmp_path)]) == 1
    _one_line_error(capsys, "--only 07: no such notebook")


def test_student_reports_a_misplaced_marker_in_one_line(tmp_path, capsys):
    path = tmp_path / "00_bad.ipynb"
    nb = _notebook(path, "### BEGIN SOLUTION\nx = 1")
    nb.cells[0].metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "x"}
    nbformat.write(nb, path)
    assert cli.main(["student", str(path), "--out", str(tmp_path / "out")]) == 1
    _one_line_error(capsys, "00_bad.ipynb, cell 0")
    assert not (tmp_path / "out" / "00_bad.ipynb").exists()


def test_build_exits_1_when_a_notebook_fails_and_prints_the_summary(tmp_path, capsys):
    good, bad = tmp_path / "01_good.ipynb", tmp_path / "02_bad.ipynb"
    _notebook(good, "print('fine')")
    _notebook(bad, "raise RuntimeError('boom')")
    assert cli.main(["build", str(good), str(bad), "--profile", "ci", "--no-pdf", "--out", str(tmp_path / "b")]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^01_good +built", captured.out, re.M) and re.search(r"^02_bad +failed", captured.out, re.M)
    assert captured.err.strip().splitlines()[-1] == "coursekit: failed: 02_bad (reasons above)"
    assert (tmp_path / "b" / "solutions" / "01_good.ipynb").is_file()


def test_grade_parses_with_its_defaults():
    args = cli.build_parser().parse_args(["grade", "subs"])
    assert (args.submissions, args.solutions, args.out, args.profile) == ("subs", None, None, "ci")
    assert (args.timeout, args.total_timeout, args.memory, args.no_memory_limit) == (120, 1800, 8192, False)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["grade", "subs", "--memory", "0"])


def test_grade_writes_the_gradebook_and_prints_each_submission(tmp_path, capsys):
    check = nbformat.v4.new_code_cell("from coursekit.checks import report\nreport.expect(x == 1, 'x is 1', 1, x, 'x = 1')")
    check.metadata["nbgrader"] = {"grade": True, "locked": True, "solution": False, "points": 2, "grade_id": "check_x"}
    solution = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), check])
    notebooks.write(solution, tmp_path / "solutions" / "00_tiny.ipynb")
    notebooks.write(solution, tmp_path / "subs" / "ann" / "00_tiny.ipynb")
    wrong = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 2"), check])
    notebooks.write(wrong, tmp_path / "subs" / "ben" / "00_tiny.ipynb")
    out = tmp_path / "grades" / "book.csv"
    assert cli.main(["grade", str(tmp_path / "subs"), "--solutions", str(tmp_path / "solutions"), "--out", str(out),
                     "--timeout", "30", "--memory", "3000"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^ann +00_tiny +2 / 2 +graded$", printed, re.M), printed
    assert re.search(r"^ben +00_tiny +0 / 2 +graded$", printed, re.M), printed
    assert out.read_text().splitlines()[1:] == ["ann,00_tiny,2,2,2,graded,ann/00_tiny.ipynb",
                                                "ben,00_tiny,0,0,2,graded,ben/00_tiny.ipynb"]
    assert "x is 1" in (tmp_path / "grades" / "feedback" / "ben-00_tiny.txt").read_text()


def test_grade_without_submissions_is_one_line(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "nothing"), "--out", str(tmp_path / "g.csv")]) == 1
    _one_line_error(capsys, "no such folder of submissions")
