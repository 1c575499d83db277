"""tqdm's widget progress bars in executed notebooks, as text a reader can use.

A bar that ``tqdm.auto`` shows in a notebook is a widget (an HBox of an HTML
prefix, a FloatProgress and an HTML suffix) whose state lives in the
notebook's ``metadata.widgets``. Its output's ``text/plain`` is the line tqdm
printed when the bar appeared (``0%``), which is all that a reader without the
widget JavaScript sees: GitHub, nbconvert's exports, a diff. ``settle`` writes
each bar's final line there instead, e.g.
``epoch: 100%|██████████| 3/3 [00:02<00:00, loss=0.41]``; the widget itself
stays for JupyterLab.
"""
from __future__ import annotations

import html
import re

import nbformat

BAR_WIDTH = 10  # characters, as tqdm draws a bar in a notebook's text/plain
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def bar(value: float, low: float, high: float) -> str:
    """A ``BAR_WIDTH``-character bar of block characters for ``value`` in ``[low, high]``, as tqdm draws it."""
    fraction = min(max((value - low) / (high - low), 0.0), 1.0) if high > low else 0.0
    full, eighths = divmod(int(fraction * BAR_WIDTH * 8), 8)
    blocks = "█" * full + (" ▏▎▍▌▋▊▉"[eighths] if eighths else "")
    return blocks.ljust(BAR_WIDTH)


def bar_line(models: dict, model_id: str | None) -> str | None:
    """tqdm's text line for the widget ``model_id`` of ``models`` (a widget state's ``state``), or None if the
    widget is no progress bar (not exactly one progress model among plain HTML or label children)."""
    model = models.get(model_id) or {}
    children = model.get("state", {}).get("children") or [f"IPY_MODEL_{model_id}"]
    parts = [models.get(child.removeprefix("IPY_MODEL_"), {}) for child in children]
    names = [part.get("model_name") for part in parts]
    if names.count("FloatProgressModel") + names.count("IntProgressModel") != 1:
        return None
    pieces = []
    for name, part in zip(names, parts, strict=True):
        state = part.get("state", {})
        if name in ("FloatProgressModel", "IntProgressModel"):
            pieces.append(bar(state.get("value") or 0, state.get("min") or 0, state.get("max") or 0))
        elif name in ("HTMLModel", "LabelModel"):
            text = html.unescape(re.sub(r"<[^>]*>", "", state.get("value") or ""))
            pieces.append(text.replace("\u2007", " ").replace("\xa0", " "))
        else:
            return None
    return "|".join(pieces)


def widget_models(notebook: nbformat.NotebookNode) -> dict:
    """The widget models stored in ``notebook.metadata.widgets`` by id (``{}`` when there are none)."""
    return notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def settle(notebook: nbformat.NotebookNode) -> int:
    """Give every progress-bar output of ``notebook`` its final line as ``text/plain``, in place.

    Returns:
        How many outputs were rewritten; widgets that are no progress bar are left as they are.
    """
    models, settled = widget_models(notebook), 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                line = bar_line(models, data[WIDGET_VIEW].get("model_id"))
                if line is not None:
                    data["text/plain"] = line
                    settled += 1
    return settled
