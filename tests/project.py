"""The project's own files as the tests read them: pyproject.toml's [project] table and the constraints files."""
import re
import sys

from coursekit.config import REPO_ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (the test extra installs it)
    import tomli as tomllib

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def requirement_name(requirement: str) -> str:
    """``'torch>=2.4'`` -> ``'torch'``: the normalised distribution name of a requirement."""
    return re.split(r"[<>=!~\[; @]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pins(filename: str) -> dict[str, str]:
    """``{package: version}`` of the ``package==version`` lines of a constraints file (comments skipped)."""
    found = {}
    for line in (REPO_ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            package, _, version = line.partition("==")
            found[requirement_name(package)] = version.strip()
    return found
