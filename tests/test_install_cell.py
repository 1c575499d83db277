"""The first code cell of every notebook: installs the kit where it is missing (Colab), a no-op elsewhere."""
import importlib
import importlib.util
import subprocess
import sys

import nbformat
import pytest
from project import PROJECT

from coursekit.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TAG = "install-kit"
REPOSITORY = PROJECT["urls"]["Repository"]


def _install_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    code = [c for c in cells if c.cell_type == "code"]
    return code[0]


def _run_cell(monkeypatch, installed, environ=None):
    """Execute the cell's source with the kit's presence and pip faked; returns the pip calls."""
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if installed else None)
                        if name == "coursekit" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: calls.append((command, kw)))
    monkeypatch.delenv("COURSEKIT_SOURCE", raising=False)
    for key, value in (environ or {}).items():
        monkeypatch.setenv(key, value)
    exec(_install_cell(NOTEBOOKS[0]).source, {})
    return calls


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_its_code_with_the_same_install_cell(path):
    cell = _install_cell(path)
    assert TAG in cell.metadata.get("tags", []), "the first code cell is the install cell"
    assert cell.source == _install_cell(NOTEBOOKS[0]).source
    assert cell.outputs == [], "where the kit is installed (CI, make lab) the cell prints nothing"


def test_the_cell_installs_from_the_projects_repository_by_default():
    assert f'"git+{REPOSITORY}"' in _install_cell(NOTEBOOKS[0]).source


def test_the_cell_does_nothing_where_the_kit_is_installed(monkeypatch, capsys):
    assert _run_cell(monkeypatch, installed=True) == []
    assert capsys.readouterr().out == ""


def test_the_cell_installs_the_kit_with_this_pythons_pip_where_it_is_missing(monkeypatch, capsys):
    calls = _run_cell(monkeypatch, installed=False)
    assert calls == [([sys.executable, "-m", "pip", "install", "--quiet", f"git+{REPOSITORY}"], {"check": True})]
    assert "installing the course kit" in capsys.readouterr().out
    # No --upgrade, no --force-reinstall, no pins: pip keeps Colab's torch when it satisfies the kit's floor.
    assert not any(arg.startswith(("--upgrade", "-U", "--force", "torch")) for arg in calls[0][0])


def test_an_instructor_can_point_the_cell_at_another_source(monkeypatch, tmp_path):
    calls = _run_cell(monkeypatch, installed=False, environ={"COURSEKIT_SOURCE": str(tmp_path / "coursekit")})
    assert calls[0][0][-1] == str(tmp_path / "coursekit")


def test_the_readme_links_every_notebook_to_colab():
    readme = (REPO_ROOT / "README.md").read_text()
    repository = REPOSITORY.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        assert f"https://colab.research.google.com/github/{repository}/blob/main/notebooks/{path.name}" in readme
