"""Structure of the course notebooks: markers, stored outputs, profile settings."""
import re

import nbformat
import pytest

from coursekit import profiles
from coursekit.config import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_markers_are_balanced_and_present(path):
    count = 0
    for index, cell in enumerate(_cells(path)):
        markers = re.findall(rf"{BEGIN}|{END}", cell.source)
        assert markers[0::2] == [BEGIN] * len(markers[0::2]), f"cell {index}: END before BEGIN"
        assert markers[1::2] == [END] * len(markers[1::2]), f"cell {index}: BEGIN without END"
        assert len(markers) % 2 == 0, f"cell {index}: unbalanced solution markers"
        count += len(markers) // 2
    assert count > 0, "a solution notebook marks at least one exercise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_cell_has_stored_outputs_from_one_run(path):
    code = [c for c in _cells(path) if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert None not in counts, "re-execute the notebook (make notebooks) so nbval has outputs to compare"
    assert counts == sorted(counts), "outputs come from one top-to-bottom run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_its_profile_and_records_results(path):
    cells = _cells(path)
    sources = "\n".join(c.source for c in cells if c.cell_type == "code")
    outputs = "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.outputs)
    assert path.stem in profiles.SETTINGS
    assert f"settings('{path.stem}')" in sources or f'settings("{path.stem}")' in sources
    assert "seed_everything" in sources
    assert "result: " in outputs, "headline numbers go through coursekit.results.record"
    assert "Traceback" not in outputs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_explanation_comes_first(path):
    assert _cells(path)[0].cell_type == "markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tolerance_table_matches_the_stored_outputs(path):
    """Every number of a training-output cell has a measured tolerance, and no entry is stale."""
    from nbval.plugin import coalesce_streams

    from coursekit import regression

    table = regression.load(regression.table_path(path))
    sanitize = regression.sanitizer(path.parent / "sanitize.cfg")
    expected = {}
    for cell in _cells(path):
        if cell.cell_type != "code" or regression.TAG not in cell.metadata.get("tags", []):
            continue
        for slot, text in regression.text_slots(coalesce_streams(cell.outputs), sanitize).items():
            for row, matches in enumerate(regression.numbers_by_line(text)):
                for index, match in enumerate(matches):
                    expected[(cell.id, slot, row, index)] = match.group()
    stale = sorted(set(table) ^ set(expected)) + sorted(k for k in set(table) & set(expected)
                                                         if table[k].stored != expected[k])
    assert not stale, (f"the tolerance table of {path.name} does not match its stored outputs at {stale[:3]}...; "
                       f"run `make notebooks NOTEBOOKS={path.relative_to(REPO_ROOT)}` to refresh both together")
    assert all(entry.tolerance >= 0 for entry in table.values())
