"""Solution PDFs (coursekit.pdf): the stored executed notebooks rendered offline with Chromium, checked with poppler."""
from __future__ import annotations

import datetime
import io
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from coursekit import pdf

NOTEBOOKS = {path.stem: path for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))}
DATE = datetime.date(2026, 12, 2)
POPPLER = ("pdfinfo", "pdftoppm", "pdftotext", "pdfimages")


@pytest.fixture(scope="session")
def renderer():
    """The browser that ``pdf.render`` will use, once Chromium, the local MathJax and poppler's tools are all here.

    Skips the test, saying what to install, where one is missing; fails instead with ``COURSEKIT_REQUIRE_PDF=1``.
    """
    missing = []
    try:
        browser = pdf.find_browser()
        pdf.mathjax_url()
    except pdf.PdfError as exc:
        missing.append(str(exc))
    tools = [tool for tool in POPPLER if shutil.which(tool) is None]
    if tools:
        missing.append(f"no {', '.join(tools)} to check the PDFs with: `apt-get install poppler-utils`")
    if missing:
        (pytest.fail if os.environ.get("COURSEKIT_REQUIRE_PDF") == "1" else pytest.skip)("; ".join(missing))
    return browser


@pytest.fixture(scope="session")
def pdfs(renderer, tmp_path_factory):
    """Every stored notebook rendered once in profile ``ci`` on ``DATE``: ``{name: PDF path}``."""
    out = tmp_path_factory.mktemp("pdfs")
    return {name: pdf.render(path, out / f"{name}.pdf", "ci", DATE) for name, path in NOTEBOOKS.items()}


def tool(*args: str | os.PathLike) -> str:
    """The standard output of the poppler command ``args``."""
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, check=True).stdout


def page_texts(path: Path) -> list[str]:
    """The text of each page of the PDF at ``path`` (``pdftotext``), first page first."""
    return tool("pdftotext", path, "-").split("\f")[:page_count(path)]


def page_count(path: Path) -> int:
    """How many pages the PDF at ``path`` has (``pdfinfo``)."""
    return int(re.search(r"^Pages:\s+(\d+)$", tool("pdfinfo", path), re.MULTILINE).group(1))


def raster(path: Path, page: int) -> np.ndarray:
    """Page ``page`` (1-based) of the PDF at ``path`` at 50 dpi (``pdftoppm``) as a grey-level array."""
    png = subprocess.run(["pdftoppm", "-f", str(page), "-l", str(page), "-r", "50", "-png", str(path)],
                         capture_output=True, check=True).stdout
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def markdown_title(notebook: nbformat.NotebookNode) -> str:
    """The ``# `` heading of the first markdown cell."""
    source = next(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    return re.search(r"^# +(.+)$", source, re.MULTILINE).group(1).strip()


def expected_pages(notebook: nbformat.NotebookNode) -> float:
    """A rough page count for ``notebook``: its source and text output lines (80 characters wide) at 50 a page,
    and half a page per figure."""
    lines, figures = 0, 0
    for cell in notebook.cells:
        text = [cell.source]
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            figures += "image/png" in data
            text.append(output.get("text", "") if output["output_type"] == "stream" else data.get("text/plain", ""))
        lines += sum(max(1, math.ceil(len(line) / 80)) for line in "\n".join(text).splitlines())
    return lines / 50 + figures / 2


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_pdf_pages(pdfs, name):
    path = pdfs[name]
    notebook = nbformat.read(NOTEBOOKS[name], as_version=4)
    estimate = expected_pages(notebook)
    pages = page_count(path)
    assert max(5.0, estimate / 2) <= pages <= 2 * estimate + 2, (pages, estimate)
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"
    thumbnails = subprocess.run(["pdftoppm", "-r", "8", "-png", str(path)], capture_output=True, check=True).stdout
    assert thumbnails.count(b"\x89PNG") == pages


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_header(pdfs, name):
    notebook = nbformat.read(NOTEBOOKS[name], as_version=4)
    first = " ".join(page_texts(pdfs[name])[0].split())
    title = markdown_title(notebook)
    assert first.startswith(title)
    assert "profile: ci" in first and "built: 2026-12-02" in first
    assert re.search(r"^Title:\s+(.+)$", tool("pdfinfo", pdfs[name]), re.MULTILINE).group(1) == title


def test_figures_embedded(pdfs):
    path = pdfs["03_cifar_classifier"]
    notebook = nbformat.read(NOTEBOOKS["03_cifar_classifier"], as_version=4)
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    figures = sum("image/png" in output.get("data", {}) for output in outputs)
    listed = [line.split() for line in tool("pdfimages", "-list", path).splitlines()[2:]]
    images = [row for row in listed if row[2] == "image"]
    assert len(images) >= figures > 0
    page = int(images[0][0])
    assert raster(path, page).std() > 20, f"page {page}, which holds a figure, looks blank"


def test_math_typeset(pdfs):
    path = pdfs["02_backprop"]
    notebook = nbformat.read(NOTEBOOKS["02_backprop"], as_version=4)
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    code = "\n".join(cell.source + str(cell.get("outputs", "")) for cell in notebook.cells if cell.cell_type == "code")
    formulas = re.findall(r"(?<!\$)\$[^$\n]+\$(?!\$)", markdown)
    commands = set(re.findall(r"\\[A-Za-z]+", " ".join(formulas))) - set(re.findall(r"\\[A-Za-z]+", code))
    assert "\\Delta" in commands and len(formulas) > 20
    pages = page_texts(path)
    text = " ".join(" ".join(pages).split())
    assert not [formula for formula in formulas if " ".join(formula.split()) in text]
    assert not [command for command in commands if command in text]
    page = next(number for number, page in enumerate(pages, 1) if "Δ" in page)  # MathJax writes \Delta as Δ
    assert raster(path, page).std() > 20, f"page {page}, which holds math, looks blank"


def test_progress_bars_show_their_end(pdfs):
    text = "\n".join(page_texts(pdfs["03_cifar_classifier"]))
    assert re.search(r"^Net: 100%\|█{10}\| 4/4 \[", text, re.MULTILINE)
    assert re.search(r"^BetterNet: 100%\|█{10}\| 4/4 \[", text, re.MULTILINE)
    assert not re.search(r"\b0%\|", text)


@pytest.mark.parametrize("name", ["02_backprop", "03_cifar_classifier", "04_fcn"])
def test_progress_text(name):
    notebook = nbformat.read(NOTEBOOKS[name], as_version=4)
    views = [output for cell in notebook.cells for output in cell.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    plain = pdf.progress_text(notebook)
    assert "widgets" in notebook.metadata and "widgets" not in plain.metadata, "the original changed, or kept state"
    outputs = [output for cell in plain.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    bars = [output["data"]["text/plain"] for output in outputs if "█" in output.get("data", {}).get("text/plain", "")]
    assert len(bars) == len(views) > 0
    for bar in bars:
        assert re.fullmatch(r"[^|\n]+: 100%\|█{10}\| (\d+)/\1 \[[^\]\n]+\]", bar), bar


def test_long_lines_wrap_and_untitled_notebook(renderer, tmp_path):
    line = "values = [" + ", ".join(f"{i:04d}" for i in range(70)) + "]"
    printed = "_".join(f"w{i:03d}" for i in range(90))  # no space to break at
    assert len(line) > 400 and len(printed) > 400
    cell = nbformat.v4.new_code_cell(line, outputs=[nbformat.v4.new_output("stream", name="stdout", text=printed)])
    source = tmp_path / "long_lines.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), source)
    path = pdf.render(source, tmp_path / "out" / "long_lines.pdf", "cpu", DATE)
    text = "".join(tool("pdftotext", path, "-").split())
    assert "".join(line.split()) in text and "".join(printed.split()) in text
    assert text.startswith("long_linesprofile:cpu·built:2026-12-02")
    boxes = tool("pdftotext", "-bbox", path, "-")
    width = float(re.search(r'<page width="([\d.]+)"', boxes).group(1))
    assert max(float(x) for x in re.findall(r'xMax="([\d.]+)"', boxes)) < width, "text runs off the page"


def test_html_is_offline(renderer):
    notebook = pdf.progress_text(nbformat.read(NOTEBOOKS["02_backprop"], as_version=4))
    page = pdf._html(notebook, NOTEBOOKS["02_backprop"].parent, "02_backprop")
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", page)) == 4


def test_missing_browser(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(pdf.PdfError, match="COURSEKIT_CHROMIUM=.*no-such-chromium.*apt-get install chromium"):
        pdf.render(NOTEBOOKS["01_transforms"], tmp_path / "out.pdf", "ci")
    monkeypatch.delenv("COURSEKIT_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pdf.PdfError, match="apt-get install chromium libjs-mathjax fonts-mathjax"):
        pdf.find_browser()
    assert not (tmp_path / "out.pdf").exists()


def test_missing_mathjax(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSEKIT_MATHJAX_URL", raising=False)
    monkeypatch.setattr(pdf, "MATHJAX_JS", tmp_path / "MathJax.js")
    with pytest.raises(pdf.PdfError, match="libjs-mathjax"):
        pdf.mathjax_url()
    monkeypatch.setenv("COURSEKIT_MATHJAX_URL", "file:///elsewhere/MathJax.js?config=TeX-AMS_CHTML")
    assert pdf.mathjax_url() == "file:///elsewhere/MathJax.js?config=TeX-AMS_CHTML"


def test_failing_browser_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_CHROMIUM", "/bin/false")
    monkeypatch.setenv("COURSEKIT_MATHJAX_URL", "file:///nowhere/MathJax.js")
    out = tmp_path / "out"
    with pytest.raises(pdf.PdfError, match=r"false failed to print 01_transforms.html to PDF \(exit status 1\)"):
        pdf.render(NOTEBOOKS["01_transforms"], out / "01_transforms.pdf", "ci")
    assert list(out.iterdir()) == []
