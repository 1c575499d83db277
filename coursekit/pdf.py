"""Solution PDFs of executed notebooks, made offline.

The notebook goes through nbconvert's ``HTMLExporter`` (template ``lab``) to
an HTML file, which the system Chromium prints headless to PDF. Math is
typeset by the local MathJax 2 of Debian's ``libjs-mathjax``; nothing is
fetched from the network. Stored widget progress bars, whose JavaScript cannot
load offline, become text lines first (``progress_text``). Each PDF starts
with the notebook's title, the profile it was executed in and the date.

System packages: ``apt-get install chromium libjs-mathjax fonts-mathjax``.
``COURSEKIT_CHROMIUM`` names another browser binary, ``COURSEKIT_MATHJAX_URL``
another MathJax 2 (``MathJax.js?config=...``).
"""
from __future__ import annotations

import copy
import datetime
import html
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import nbformat

from . import progress, tempfiles

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MATHJAX_JS = Path("/usr/share/javascript/mathjax/MathJax.js")
MATHJAX_CONFIG = "TeX-AMS_CHTML-full,Safe"
INSTALL_HINT = "apt-get install chromium libjs-mathjax fonts-mathjax"
TIMEOUT_S = 180  # wall seconds for one browser run
VIRTUAL_TIME_MS = 60_000  # the browser's virtual time for MathJax to finish before it prints
# Added to the exported page's <head>: code and output lines wrap instead of running off the page, and math in
# narrow table cells is not broken over lines (nbconvert's MathJax configuration turns automatic breaks on).
HEAD_EXTRA = """<style type="text/css">
.jp-InputArea pre, .jp-InputArea code, .jp-OutputArea pre, .jp-OutputArea code {
  white-space: pre-wrap !important;
  overflow-wrap: anywhere;
}
.coursekit-header { color: #555; }
</style>
<script type="text/x-mathjax-config">
MathJax.Hub.Config({CommonHTML: {linebreaks: {automatic: false}}});
</script>
"""


class PdfError(RuntimeError):
    """No browser or MathJax to render with, or the browser failed."""


def find_browser() -> str:
    """The Chromium binary to print with: ``COURSEKIT_CHROMIUM`` if set, else the first of ``BROWSERS`` on PATH.

    Raises:
        PdfError: ``COURSEKIT_CHROMIUM`` names no executable file, or none of ``BROWSERS`` is on PATH.
    """
    named = os.environ.get("COURSEKIT_CHROMIUM")
    if named:
        found = shutil.which(named)
        if not found:
            raise PdfError(f"COURSEKIT_CHROMIUM={named} is not an executable file; "
                           f"point it at a Chromium or Chrome binary, or unset it and `{INSTALL_HINT}`")
        return found
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise PdfError(f"no Chromium to render PDFs with (looked for {', '.join(BROWSERS)} on PATH): "
                   f"`{INSTALL_HINT}`, or set COURSEKIT_CHROMIUM to a Chromium or Chrome binary")


def mathjax_url() -> str:
    """The MathJax 2 URL for the page: ``COURSEKIT_MATHJAX_URL`` if set, else the local ``MATHJAX_JS`` as file://.

    Raises:
        PdfError: neither is there.
    """
    url = os.environ.get("COURSEKIT_MATHJAX_URL")
    if url:
        return url
    if not MATHJAX_JS.is_file():
        raise PdfError(f"no local MathJax ({MATHJAX_JS}) to typeset math offline: `{INSTALL_HINT}`, "
                       "or set COURSEKIT_MATHJAX_URL to a MathJax 2 MathJax.js?config=... URL")
    return f"{MATHJAX_JS.as_uri()}?config={MATHJAX_CONFIG}"


def progress_text(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` whose widget outputs are plain text, for places where widget JavaScript cannot run.

    A tqdm bar becomes the line tqdm prints in its final state (``progress.settle``),
    e.g. ``epoch: 100%|██████████| 3/3 [00:02<00:00, loss=0.41]``; any other
    widget keeps its ``text/plain``. The widget state is dropped from the copy's
    metadata, as no output refers to it any more.
    """
    notebook = copy.deepcopy(notebook)
    progress.settle(notebook)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if progress.WIDGET_VIEW in data:
                output["data"] = nbformat.NotebookNode({"text/plain": data.get("text/plain", "")})
    return notebook


def _with_header(notebook: nbformat.NotebookNode, name: str, profile: str, date: datetime.date) -> None:
    """Put the header line (profile, date) under the title of ``notebook``, in place; sets ``metadata.title``.

    The title is the ``# `` heading of the first markdown cell; without one,
    a cell with ``# <name>`` is put first.
    """
    header = (f'\n\n<p class="coursekit-header">profile: {html.escape(profile)} &middot; '
              f"built: {date.isoformat()}</p>\n\n")
    cell = next((c for c in notebook.cells if c.cell_type == "markdown"), None)
    heading = re.search(r"^# +(.+)$", cell.source, re.MULTILINE) if cell is not None else None
    if heading is None:
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {name}{header}"))
        notebook.metadata["title"] = name
    else:
        cell.source = cell.source[:heading.end()] + header + cell.source[heading.end():].lstrip("\n")
        notebook.metadata["title"] = heading.group(1).strip()


def _html(notebook: nbformat.NotebookNode, folder: Path, name: str) -> str:
    """The page of ``notebook`` (its files relative to ``folder``) to print: nbconvert's lab HTML, offline."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", mathjax_url=mathjax_url(), require_js_url="", embed_images=True)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": name, "path": str(folder)}})
    return body.replace("</head>", HEAD_EXTRA + "</head>", 1)


def _print(browser: str, page: Path, target: Path, scratch: Path) -> None:
    """Print the HTML file ``page`` to the PDF ``target`` with ``browser``, its profile and log under ``scratch``.

    Raises:
        PdfError: the browser failed, ran past ``TIMEOUT_S`` or wrote no PDF.
    """
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-pdf-header-footer", f"--user-data-dir={scratch / 'profile'}",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--print-to-pdf={target}", page.as_uri()]
    log = scratch / "browser.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                   start_new_session=True)
        try:
            code = process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise PdfError(f"{browser} did not finish printing {page.name} within {TIMEOUT_S} s") from None
    if code != 0 or not target.is_file() or target.read_bytes()[:5] != b"%PDF-":
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        raise PdfError(f"{browser} failed to print {page.name} to PDF (exit status {code})" +
                       (f":\n{tail}" if tail else ""))


def render(notebook_path: str | os.PathLike, pdf_path: str | os.PathLike, profile: str,
           date: datetime.date | None = None) -> Path:
    """Render the executed notebook at ``notebook_path`` to the PDF ``pdf_path``; returns ``pdf_path`` as a Path.

    The PDF starts with the notebook's title and the line
    ``profile: <profile> · built: <date>`` (``date`` defaults to today). It is
    written atomically: nothing appears at ``pdf_path`` unless it is complete.

    Raises:
        PdfError: no browser or MathJax (the message says what to install), or the browser failed.
    """
    notebook_path, pdf_path = Path(notebook_path), Path(pdf_path)
    browser = find_browser()
    notebook = progress_text(nbformat.read(notebook_path, as_version=4))
    _with_header(notebook, notebook_path.stem, profile, date or datetime.date.today())
    page = _html(notebook, notebook_path.resolve().parent, notebook_path.stem)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    tempfiles.remove_stale(pdf_path.parent, pdf_path.name, ".tmp")
    with tempfile.TemporaryDirectory(prefix="coursekit-pdf-") as scratch:
        html_file = Path(scratch) / f"{notebook_path.stem}.html"
        html_file.write_text(page, encoding="utf-8")
        tmp = pdf_path.with_name(f".{pdf_path.name}.{uuid.uuid4().hex}.tmp")  # the browser creates it
        try:
            _print(browser, html_file, tmp, Path(scratch))
            os.replace(tmp, pdf_path)
        finally:
            tmp.unlink(missing_ok=True)
    return pdf_path
