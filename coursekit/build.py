"""The course build: every solution notebook executed in a profile, its solution PDF and its student version.

``build`` is what ``coursekit build`` (and ``make course``) runs. Each step is
also a function of its own (``run_solution``, ``render_pdf``,
``student.write_student``) for the single-step commands. A notebook whose data
cannot be had is *skipped* with the reason and the rest still build; any other
error makes it *failed*. Nothing half-made is left at a final name: notebooks
are written atomically, and only after their step succeeded.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from tqdm import tqdm

from . import __version__, config, notebooks, results, student, tables, tempfiles
from .data import status

# The datasets each notebook reads (keys of coursekit.data.status.DATASETS); a test keeps this in step
# with the notebooks' code.
NOTEBOOK_DATA = {
    "01_transforms": ("voc",),
    "02_backprop": ("mnist",),
    "03_cifar_classifier": ("cifar10",),
    "04_fcn": ("cmp_facade", "voc"),
    "05_colorization": ("cifar10",),
    "06_finetuning": ("flowers17",),
}
# Errors that mean "the data is not here", not "the notebook is broken".
DATA_ERRORS = ("DatasetNotFoundError", "IncompleteDatasetError")
SKIP_HINT = " [`coursekit data` fetches and checks it; COURSEKIT_DATA names a copy]"
# The build's sub-folders.
SOLUTIONS, STUDENT = "solutions", "student"


@dataclass
class Built:
    """What the build made of one notebook.

    Attributes:
        name: the notebook's stem, e.g. ``"01_transforms"``.
        status: ``"built"``, ``"skipped"`` (its data cannot be had) or ``"failed"``.
        reason: why it was skipped or failed (one line), else ``""``.
        seconds: wall time of its run.
        data: where each dataset it reads came from (``status.origin``).
        results: its ``result:`` lines, ``{name: value as printed}``.
        files: the files written for it.
        pdf: ``"ok"``, ``"not asked for"``, or why no PDF was made.
    """

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    data: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    pdf: str = ""


def default_out() -> Path:
    """``build/`` in the kit's folder (the checkout, or ``COURSEKIT_HOME``)."""
    return config.kit_home() / "build"


def printed_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed (stream outputs and plain-text results), joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
            elif "data" in output:
                parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def run_solution(path: Path, out_dir: Path, profile: str, timeout: int = 900, progress: bool = True) -> Built:
    """Execute the solution notebook at ``path`` in ``profile`` into ``out_dir/<name>.ipynb``.

    The executed copy records ``metadata.coursekit`` (profile, date, kit
    version) for its PDF; the notebook at ``path`` is not changed. Never raises
    for a notebook that fails: the returned ``Built`` says why.
    """
    name = path.stem
    bar = tqdm(total=1, desc=name, unit="cell", disable=not progress, leave=True)

    def on_cell(index: int, count: int) -> None:
        bar.total = count
        bar.n = index
        bar.set_postfix_str(f"cell {index + 1}/{count}", refresh=True)

    try:
        notebook, seconds = notebooks.run(path, profile, timeout, on_cell=on_cell)
        bar.update(bar.total - bar.n)
    except notebooks.NotebookError as exc:
        skipped = exc.ename in DATA_ERRORS
        reason = (exc.evalue or str(exc)).splitlines()[0] if skipped else str(exc)
        data = {key: status.origin(key) for key in NOTEBOOK_DATA.get(name, ())}
        return Built(name, "skipped" if skipped else "failed", reason, data=data)
    finally:
        bar.close()
    notebook.metadata["coursekit"] = {"profile": profile, "built": datetime.date.today().isoformat(),
                                      "kit_version": __version__}
    target = notebooks.write(notebook, out_dir / path.name)
    printed = printed_text(notebook)
    data = {key: status.origin(key, printed) for key in NOTEBOOK_DATA.get(name, ())}
    return Built(name, "built", seconds=seconds, data=data, results=results.parse(printed), files=[str(target)])


def render_pdf(executed: Path, out_dir: Path) -> Path:
    """The solution PDF of an executed notebook (``run_solution``'s output), written to ``out_dir``.

    Its header names the profile and date recorded in the notebook.

    Raises:
        pdf.PdfError: no browser to render with, or rendering failed.
    """
    from . import pdf

    notebook = nbformat.read(executed, as_version=4)
    meta = notebook.metadata.get("coursekit", {})
    built = meta.get("built")
    date = datetime.date.fromisoformat(built) if built else None
    return pdf.render(executed, out_dir / f"{executed.stem}.pdf", meta.get("profile", "unknown"), date)


def build(paths: list[Path], out: Path, profile: str, timeout: int = 900, make_pdf: bool = True,
          progress: bool = True) -> list[Built]:
    """The whole course build of the solution notebooks at ``paths`` into ``out``.

    Writes ``out/solutions/<name>.ipynb`` and ``.pdf`` (unless not ``make_pdf``; a
    machine without Chromium gets the reason in the row instead) and
    ``out/student/<name>.ipynb``
    for each notebook, and ``out/summary.json`` with the returned rows.
    """
    rows = []
    for path in paths:
        row = run_solution(path, out / SOLUTIONS, profile, timeout, progress)
        row.files.append(str(student.write_student(path, out / STUDENT)))
        if row.status == "built" and make_pdf:
            from . import pdf
            try:
                row.files.append(str(render_pdf(Path(row.files[0]), out / SOLUTIONS)))
                row.pdf = "ok"
            except pdf.PdfError as exc:
                row.pdf = str(exc).splitlines()[0]
        elif row.status == "built":
            row.pdf = "not asked for"
        rows.append(row)
    tempfiles.write_text(out / "summary.json",
                         json.dumps({"profile": profile, "notebooks": [asdict(r) for r in rows]}, indent=1) + "\n")
    return rows


def format_summary(rows: list[Built]) -> str:
    """The build's summary table (notebook, status, time, data, PDF), then each notebook's results."""
    table = []
    for row in rows:
        data = ", ".join(f"{key}: {where}" for key, where in row.data.items()) or "-"
        table.append((row.name, row.status, f"{row.seconds:.0f} s" if row.status == "built" else "-", data,
                      row.pdf or "-"))
    lines = tables.format_table(("notebook", "status", "time", "data", "pdf"), table).splitlines()
    for row in rows:
        if row.reason:
            hint = SKIP_HINT if row.status == "skipped" else ""
            lines.append(f"{row.name} {row.status}: {row.reason}{hint}")
    if any(row.results for row in rows):
        lines.append("")
        lines.append("results")
        for row in rows:
            lines.extend(f"  {row.name}  {name} = {value}" for name, value in row.results.items())
    return "\n".join(lines)
