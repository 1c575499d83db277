"""Checks an installed kit as a student's `pip install` leaves it (run by `make test-install`).

Usage: python install_check.py NOTEBOOK_DIR WHEEL, with the interpreter of a fresh virtual environment that holds
the wheel and its core dependencies only, from a folder outside the checkout. It checks that

* ``coursekit`` is imported from the environment, not from a checkout;
* every module of the package and every import statement of every notebook works with the core alone;
* the kit keeps its files in the user's cache, never in ``site-packages``;
* the command answers ``--help`` and ``--version`` without loading torch, and a command that needs an
  extra says which one in one line with exit status 1;
* the notebooks' install cell, run where the kit is missing, installs it from ``COURSEKIT_SOURCE`` (the
  wheel) so that the same process imports it, leaves torch as it was, and does nothing when run again.

It prints one line per check and exits non-zero at the first failure.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

TOOLING = {"coursekit.notebooks", "coursekit.nbval_tolerance", "coursekit.regression", "coursekit.student",
           "coursekit.build", "coursekit.pdf", "coursekit.grading", "coursekit.progress"}


def notebook_imports(folder: Path) -> list[str]:
    """The import statements of every code cell of the notebooks in ``folder``, as source lines."""
    statements = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                for node in ast.parse(source).body:
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        statements.append(ast.unparse(node))
    return statements


def install_cell(folder: Path) -> str:
    """The source of the first code cell of the first notebook (the one tagged ``install-kit``)."""
    cells = json.loads(next(iter(sorted(folder.glob("[0-9][0-9]_*.ipynb")))).read_text())["cells"]
    cell = next(c for c in cells if c["cell_type"] == "code")
    assert "install-kit" in cell["metadata"].get("tags", []), "the first code cell is not the install cell"
    return "".join(cell["source"])


def check_install_cell(folder: Path, wheel: Path) -> None:
    """Uninstall the kit, run the install cell with ``COURSEKIT_SOURCE=wheel``, then run it once more."""
    cell = install_cell(folder)
    torch_before = importlib.metadata.version("torch")
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "coursekit-cv"], check=True)
    env = {**os.environ, "COURSEKIT_SOURCE": str(wheel)}
    first = subprocess.run([sys.executable, "-c", cell + "\nimport coursekit\nprint(coursekit.__file__)"],
                           env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "site-packages" in first.stdout, first
    assert importlib.metadata.version("torch") == torch_before, "the install cell replaced torch"
    again = subprocess.run([sys.executable, "-c", cell], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "", again
    print(f"ok: the install cell installed the kit from {wheel.name} (torch {torch_before} kept); "
          f"run again, it does nothing")


def run_command(*args: str) -> subprocess.CompletedProcess:
    """``coursekit ARGS`` with this interpreter, capturing its output."""
    return subprocess.run([sys.executable, "-m", "coursekit", *args], capture_output=True, text=True, timeout=120)


def main(folder: Path, wheel: Path) -> int:
    import coursekit

    location = Path(coursekit.__file__).resolve()
    assert Path(sys.prefix).resolve() in location.parents, f"coursekit imported from {location}, not the venv"
    print(f"ok: coursekit {coursekit.__version__} imported from {location.parent}")

    modules = [m.name for m in pkgutil.walk_packages(coursekit.__path__, "coursekit.")]
    for name in modules:
        if name not in TOOLING and name not in {"coursekit.__main__"}:
            importlib.import_module(name)
    print(f"ok: {len(modules) - len(TOOLING) - 1} modules of the package import with the core dependencies")

    statements = notebook_imports(folder)
    for statement in statements:
        exec(statement, {})
    print(f"ok: the notebooks' {len(statements)} import statements run")

    from coursekit import config

    home = config.kit_home()
    assert "site-packages" not in str(home) and not config.is_checkout(), home
    print(f"ok: downloads and checkpoints go to {home}")

    probe = subprocess.run([sys.executable, "-c", "import sys; from coursekit import cli; cli.build_parser(); "
                            "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False", "parsing the command line imported torch"
    version = run_command("--version")
    assert version.returncode == 0 and coursekit.__version__ in version.stdout, version
    print(f"ok: {version.stdout.strip()}; --help does not import torch")

    missing = run_command("execute", str(next(folder.glob("*.ipynb"))))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 1 and len(lines) == 1 and "[build]" in lines[0], missing
    print(f"ok: without the build extra, `coursekit execute` says: {lines[0]}")

    check_install_cell(folder, wheel)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]).resolve()))
