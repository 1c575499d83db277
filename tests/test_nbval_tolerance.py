"""The nbval companion plugin and the tolerance measurement, on a tiny notebook."""
import json
import os

import nbformat
import pytest

from coursekit import cli, notebooks, regression

pytest_plugins = ["pytester"]

SOURCE = "import os\nprint(f\"loss {float(os.environ.get('LOSS', '2.077')):.3f} of {os.environ.get('COUNT', '10')}\")"


def _notebook(path, tagged=True):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(SOURCE)
    cell.id = "train"
    if tagged:
        cell.metadata["tags"] = [regression.TAG]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A tiny notebook, executed, with its tolerances measured from two runs that move its loss."""
    monkeypatch.delenv("LOSS", raising=False)
    monkeypatch.delenv("COUNT", raising=False)
    path = _notebook(tmp_path / "tiny.ipynb")
    notebooks.execute(path)
    entries, problems = notebooks.measure_tolerances(path, {"a": {"LOSS": "2.0795"}, "b": {"LOSS": "2.074"}},
                                                     progress=lambda line: None)
    assert problems == []
    return path


def test_measure_writes_a_tolerance_per_number(measured):
    table = json.loads(regression.table_path(measured).read_text())
    assert set(table["runs"]) == {"a", "b"}
    numbers = {entry["stored"]: entry for entry in table["numbers"]}
    assert numbers["2.077"]["deviation"] == pytest.approx(0.003)
    assert numbers["2.077"]["tolerance"] == pytest.approx(0.012)
    assert numbers["10"]["tolerance"] == 0.0


def test_measure_refuses_to_write_when_an_untagged_cell_moves(tmp_path):
    path = _notebook(tmp_path / "tiny.ipynb", tagged=False)
    notebooks.execute(path)
    _, problems = notebooks.measure_tolerances(path, {"a": {"LOSS": "2.090"}}, progress=lambda line: None)
    assert problems and "not tagged" in problems[0]
    assert not regression.table_path(path).exists()


def _nbval(pytester, path, **env):
    for name, value in env.items():
        os.environ[name] = value
    try:
        return pytester.runpytest_subprocess("-p", "coursekit.nbval_tolerance", "--nbval", "--nbval-current-env",
                                             "-p", "no:cacheprovider", str(path))
    finally:
        for name in env:
            del os.environ[name]


def test_nbval_passes_within_tolerance_and_fails_outside_with_a_clear_message(measured, pytester):
    assert _nbval(pytester, measured, LOSS="2.085").ret == 0
    failed = _nbval(pytester, measured, LOSS="2.200")
    assert failed.ret != 0
    text = failed.stdout.str()
    assert "training numbers outside their tolerance (table: tiny.json" in text
    assert "'loss' (number 1 of line 1, stdout:0, cell train): stored 2.077, now 2.200, tolerance ±0.012" in text


def test_numbers_without_tolerance_stay_exact(measured, pytester):
    assert _nbval(pytester, measured, COUNT="11").ret != 0


def test_cli_tolerances_reports_the_moved_numbers(tmp_path, monkeypatch, capsys):
    path = _notebook(tmp_path / "tiny.ipynb")
    notebooks.execute(path)
    monkeypatch.setattr(notebooks, "SIMULATED_MACHINES", {"a": {"LOSS": "2.079"}})
    assert cli.main(["tolerances", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 training numbers, 1 moved" in out and "2.077 deviation 0.002" in out


def test_adding_a_machine_widens_the_table_and_keeps_what_was_measured(measured, monkeypatch):
    monkeypatch.setenv("LOSS", "2.067")  # a real machine that moves the loss by 0.010, more than the simulated ones
    notebooks.measure_tolerances(measured, add=True, progress=lambda line: None)
    table = json.loads(regression.table_path(measured).read_text())
    assert set(table["runs"]) == {"a", "b", *notebooks.this_machine()}
    assert {entry["stored"]: entry["tolerance"] for entry in table["numbers"]} == {"2.077": pytest.approx(0.04), "10": 0}
    monkeypatch.setenv("LOSS", "2.077")  # one that does not move it: the earlier deviation stays
    notebooks.measure_tolerances(measured, add=True, progress=lambda line: None)
    table = json.loads(regression.table_path(measured).read_text())
    assert {entry["stored"]: entry["deviation"] for entry in table["numbers"]} == {"2.077": pytest.approx(0.01), "10": 0}


def test_this_machine_is_named_by_its_cpu_and_cores():
    (name, env), = notebooks.this_machine().items()
    assert env == {} and name.endswith(f" x{os.cpu_count()}") and len(name) > 3


def test_cli_add_this_machine_widens_the_table(measured, monkeypatch, capsys):
    monkeypatch.setenv("LOSS", "2.067")
    assert cli.main(["tolerances", "--add-this-machine", str(measured)]) == 0
    assert "2.077 deviation 0.01 " in capsys.readouterr().out
