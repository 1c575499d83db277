import re

import nbformat
import pytest

from coursekit import progress
from coursekit.config import REPO_ROOT


def _bar_state(value, total, prefix="epochs: ", suffix=" 3/3 [00:02<00:00, loss=0.41]"):
    """The widget state of a tqdm bar (an HBox of HTML, FloatProgress, HTML) with the box's id ``box``."""
    return {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_p", "IPY_MODEL_b", "IPY_MODEL_s"]}},
        "p": {"model_name": "HTMLModel", "state": {"value": prefix.replace(" ", "&nbsp;", 0)}},
        "b": {"model_name": "FloatProgressModel", "state": {"value": value, "min": 0, "max": total}},
        "s": {"model_name": "HTMLModel", "state": {"value": suffix.replace(" ", "\u2007", 1)}},
    }


@pytest.mark.parametrize("value, high, drawn", [(0, 4, " " * 10), (4, 4, "█" * 10), (1, 4, "██▌       "),
                                                (5, 0, " " * 10), (9, 4, "█" * 10)])
def test_bar_draws_as_tqdm_does(value, high, drawn):
    assert progress.bar(value, 0, high) == drawn and len(drawn) == progress.BAR_WIDTH


def test_bar_line_joins_prefix_bar_and_suffix():
    models = _bar_state(3, 3)
    assert progress.bar_line(models, "box") == "epochs: |██████████| 3/3 [00:02<00:00, loss=0.41]"
    models["x"] = {"model_name": "ButtonModel", "state": {}}
    models["box"]["state"]["children"].append("IPY_MODEL_x")
    assert progress.bar_line(models, "box") is None, "a widget with a button is no progress bar"
    assert progress.bar_line({}, "missing") is None


def _notebook_with(models, *model_ids):
    outputs = [nbformat.v4.new_output("display_data", data={
        progress.WIDGET_VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
        "text/plain": "epochs:   0%|          | 0/3 [00:00<?, ?epoch/s]"}) for model_id in model_ids]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fit()", outputs=outputs)])
    notebook.metadata["widgets"] = {progress.WIDGET_STATE: {"state": models, "version_major": 2, "version_minor": 0}}
    return notebook


def test_settle_writes_the_final_line_and_keeps_the_widget():
    models = {**_bar_state(3, 3), "other": {"model_name": "ButtonModel", "state": {}}}
    notebook = _notebook_with(models, "box", "other")
    assert progress.widget_models(notebook) == models
    assert progress.settle(notebook) == 1
    first, second = notebook.cells[0].outputs
    assert first.data["text/plain"] == "epochs: |██████████| 3/3 [00:02<00:00, loss=0.41]"
    assert progress.WIDGET_VIEW in first.data, "JupyterLab still shows the widget"
    assert second.data["text/plain"].startswith("epochs:   0%"), "a widget that is no bar is left alone"
    assert progress.widget_models(nbformat.v4.new_notebook()) == {}


def test_every_stored_bar_of_the_course_shows_its_end():
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                if progress.WIDGET_VIEW in output.get("data", {}):
                    text = output["data"]["text/plain"]
                    assert re.search(r"100%\|█{10}\| (\d+)/\1 ", text), (path.name, text)
