"""The conda environment, pyproject.toml and the constraints file agree."""
import re
import tomllib

import yaml

from coursekit.config import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def _conda():
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def _conda_pip_requirements():
    pip_section = next(item["pip"] for item in _conda()["dependencies"] if isinstance(item, dict))
    return [r for r in pip_section if not r.startswith(("-c", "-e", "--"))]


def test_environment_pip_section_matches_pyproject_dependencies():
    assert sorted(_conda_pip_requirements()) == sorted(_pyproject()["dependencies"])


def test_environment_installs_the_kit_with_the_constraints():
    pip_section = next(item["pip"] for item in _conda()["dependencies"] if isinstance(item, dict))
    assert "-e ." in pip_section and "-c constraints.txt" in pip_section


def test_environment_python_satisfies_requires_python():
    python = next(d for d in _conda()["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = tuple(int(x) for x in python.split("=")[-1].split("."))
    minimum = tuple(int(x) for x in _pyproject()["requires-python"].lstrip(">=").split("."))
    assert version >= minimum


def test_constraints_pin_every_torch_package_exactly():
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    assert pins.keys() >= {"torch", "torchvision"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pins.values())
    declared = {_name(r) for r in _pyproject()["dependencies"]}
    assert set(pins) <= declared
