"""The distribution: its core dependencies are what the package and the notebooks import, and the tools of
tests and maintainers sit in extras."""
import ast
import functools
import importlib.metadata
import sys

import nbformat
from install_check import TOOLING as TOOLING_MODULES
from project import PROJECT, requirement_name

import coursekit
from coursekit.config import REPO_ROOT

# Modules of the kit that only instructors and the test suite use; they import the build and test extras.
TOOLING = {module.rpartition(".")[2] + ".py" for module in TOOLING_MODULES}


def _names(requirements):
    return {requirement_name(r) for r in requirements}


def _guarded(tree) -> set[int]:
    """ids of the import nodes inside a ``try`` that handles ImportError: optional imports."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in {"ImportError", "ModuleNotFoundError"}
                for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def _imports(source: str) -> set[str]:
    """Top-level module names imported anywhere in ``source`` (absolute imports only), except optional
    imports guarded by ``except ImportError`` / ``except ModuleNotFoundError``."""
    found = set()
    tree = ast.parse(source)
    guarded = _guarded(tree)
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@functools.lru_cache(maxsize=None)
def _providers() -> dict[str, set[str]]:
    """Top-level module name -> the installed distributions whose files hold it.

    (Read from each distribution's file list: Python 3.10's ``packages_distributions``
    sees only ``top_level.txt``, which many wheels no longer have.)
    """
    provided: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        for line in (dist.read_text("RECORD") or dist.read_text("SOURCES.txt") or "").splitlines():
            path = line.split(",", 1)[0]
            top, _, rest = path.partition("/")
            if top.endswith((".dist-info", ".egg-info", ".data", ".pth")) or top in {"..", "__pycache__", ""}:
                continue
            provided.setdefault(top if rest else top.removesuffix(".py"), set()).add(name)
    return provided


STANDARD_LIBRARY = set(sys.stdlib_module_names) | {"tomllib"}  # tomllib: 3.11+, imported only there


def _distributions(modules: set[str]) -> set[str]:
    """The distributions that provide ``modules``, leaving out the standard library and the kit itself."""
    provided = _providers()
    third_party = {m for m in modules if m not in STANDARD_LIBRARY and m not in {"coursekit", "__future__"}}
    third_party -= {"tomli"} if sys.version_info >= (3, 11) else set()  # imported only on 3.10
    missing = {m for m in third_party if m not in provided}
    assert not missing, f"modules imported but not installed: {missing}"
    return {d for m in third_party for d in provided[m]} | ({"tomli"} & modules)


def _package_sources(include_tooling: bool):
    return [p.read_text() for p in (REPO_ROOT / "coursekit").rglob("*.py") if include_tooling or p.name not in TOOLING]


def _notebook_sources():
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                yield "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_imports_leave_out_the_standard_library_check_and_optional_imports():
    source = "import os\nimport numpy as np\nfrom torch import nn\nfrom . import x\n" \
             "try:\n    import nbval\nexcept ModuleNotFoundError:\n    pass\n"
    assert _imports(source) == {"os", "numpy", "torch"}


def test_requirement_name():
    assert requirement_name("torch>=2.4") == "torch"
    assert requirement_name("coursekit-cv[build]") == "coursekit-cv"
    assert requirement_name("tomli>=2; python_version < '3.11'") == "tomli"
    assert requirement_name("PyYAML") == "pyyaml"


def test_core_dependencies_are_exactly_what_the_package_and_the_notebooks_import():
    imported = set()
    for source in [*_package_sources(include_tooling=False), *_notebook_sources()]:
        imported |= _imports(source)
    assert _distributions(imported) == _names(PROJECT["dependencies"])


def test_test_and_maintainer_tools_are_extras_not_core():
    core = _names(PROJECT["dependencies"])
    extras = PROJECT["optional-dependencies"]
    assert set(extras) == {"lab", "build", "test"}
    assert not core & {"pytest", "nbval", "pytest-xdist", "pyyaml", "torchmetrics", "jupyterlab", "nbclient",
                       "nbformat", "ipykernel"}
    assert {"jupyterlab", "ipywidgets"} <= _names(extras["lab"])
    assert {"nbconvert", "nbclient", "nbformat", "ipykernel"} <= _names(extras["build"])
    assert "coursekit-cv[build]" in extras["test"]


def test_tooling_modules_and_tests_need_nothing_beyond_the_test_extra():
    imported = set()
    for source in _package_sources(include_tooling=True):
        imported |= _imports(source)
    test_modules = list((REPO_ROOT / "tests").glob("*.py"))
    for path in test_modules:
        imported |= _imports(path.read_text())
    imported -= {path.stem for path in test_modules}  # the tests' own helper modules
    extras = PROJECT["optional-dependencies"]
    allowed = _names(PROJECT["dependencies"]) | _names(extras["build"]) | _names(extras["test"])
    assert _distributions(imported) <= allowed


def test_distribution_name_version_and_license():
    assert PROJECT["name"] == "coursekit-cv"  # "coursekit" on PyPI is somebody else's project
    assert importlib.metadata.version("coursekit-cv") == coursekit.__version__
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License") and PROJECT["license"] == "MIT"
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text()
    assert f"## {coursekit.__version__}" in changelog
