"""The course build: executed solutions, student versions, skipped and failed notebooks, the summary."""
import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coursekit import build, notebooks
from coursekit.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# coursekit.data modules as the notebooks name them -> keys of coursekit.data.status.DATASETS
MODULE_KEYS = {"voc": "voc", "mnist": "mnist", "cifar": "cifar10", "cmp_facade": "cmp_facade", "flowers": "flowers17"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_data_lists_the_datasets_each_notebook_reads(path):
    cells = nbformat.read(path, as_version=4).cells
    source = "\n".join(c.source for c in cells if c.cell_type == "code")
    used = {MODULE_KEYS[m] for m in re.findall(r"\bdata\.(\w+)", source) if m in MODULE_KEYS}
    assert set(build.NOTEBOOK_DATA[path.stem]) == used


def _notebook(tmp_path, name, *sources):
    notebook = new_notebook(cells=[new_markdown_cell(f"# {name}"), *(new_code_cell(s) for s in sources)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebooks.write(notebook, tmp_path / "src" / f"{name}.ipynb")


def test_build_reports_built_skipped_and_failed_and_writes_every_part(tmp_path):
    good = _notebook(tmp_path, "01_good", "from coursekit import results\nresults.record('score', 0.5)")
    no_data = _notebook(tmp_path, "02_no_data", "from coursekit.data.download import DatasetNotFoundError\n"
                                                "raise DatasetNotFoundError('MNIST is not here; run coursekit data')")
    broken = _notebook(tmp_path, "03_broken", "1 / 0")
    out = tmp_path / "build"
    rows = build.build([good, no_data, broken], out, "ci", timeout=120, make_pdf=False, progress=False)
    assert [(r.name, r.status) for r in rows] == [("01_good", "built"), ("02_no_data", "skipped"),
                                                   ("03_broken", "failed")]
    assert rows[0].results == {"score": "0.5000"} and rows[0].pdf == "not asked for"
    assert rows[1].reason == "MNIST is not here; run coursekit data"
    assert "ZeroDivisionError" in rows[2].reason and "cell 1" in rows[2].reason
    executed = nbformat.read(out / "solutions" / "01_good.ipynb", as_version=4)
    assert executed.metadata["coursekit"]["profile"] == "ci"
    assert executed.cells[1].outputs[0].text == "result: score = 0.5000\n"
    assert not (out / "solutions" / "02_no_data.ipynb").exists(), "nothing is written for a notebook that did not run"
    assert sorted(p.name for p in (out / "student").iterdir()) == ["01_good.ipynb", "02_no_data.ipynb",
                                                                   "03_broken.ipynb"]
    summary = json.loads((out / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["built", "skipped", "failed"]

    table = build.format_summary(rows)
    assert table.splitlines()[0].split() == ["notebook", "status", "time", "data", "pdf"]
    assert "02_no_data skipped: MNIST is not here; run coursekit data [`coursekit data` fetches" in table
    assert "  01_good  score = 0.5000" in table


def test_printed_text_joins_streams_and_plain_results():
    notebook = new_notebook(cells=[new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", text="result: a = 1\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1)])])
    assert build.printed_text(notebook) == "result: a = 1\n\n42"


def test_course_build_with_no_data_at_all_builds_what_it_can_and_skips_the_rest(tmp_path, monkeypatch):
    """No mirror, an empty kit folder, no network: VOC and the flowers are stood in for (ci), the others are skipped
    with a reason."""
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("COURSEKIT_HOME", str(tmp_path / "home"))
    rows = build.build(NOTEBOOKS, tmp_path / "build", "ci", timeout=600, make_pdf=False, progress=False)
    by_name = {row.name: row for row in rows}
    stood_in = {"01_transforms": {"voc": "synthetic"}, "06_finetuning": {"flowers17": "synthetic"}}
    for name, row in by_name.items():
        if name in stood_in:
            assert (row.status, row.data) == ("built", stood_in[name]), (name, row.reason)
        else:
            assert row.status == "skipped", (name, row.reason)
            assert row.reason and "missing" in row.data.values()
    assert len(list((tmp_path / "build" / "student").glob("*.ipynb"))) == len(NOTEBOOKS)
