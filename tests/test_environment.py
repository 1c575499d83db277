"""The conda environment, pyproject.toml, the Makefile and the constraints files agree."""
import re

import pytest
import yaml
from project import PROJECT, pins, requirement_name

from coursekit.config import REPO_ROOT

INSTALL = re.compile(r"-e \.\[([a-z,]+)\]")


def _conda():
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def _conda_pip_section():
    return next(item["pip"] for item in _conda()["dependencies"] if isinstance(item, dict))


def test_conda_and_make_install_the_kit_with_the_same_extras_and_constraints():
    pip_section = _conda_pip_section()
    assert pip_section[0] == "-c constraints.txt" and len(pip_section) == 2, "packages come from pyproject.toml"
    conda_extras = INSTALL.fullmatch(pip_section[1]).group(1)
    make_extras = re.search(r'-e "\.\[([a-z,]+)\]"', (REPO_ROOT / "Makefile").read_text()).group(1)
    assert conda_extras == make_extras
    assert set(conda_extras.split(",")) <= set(PROJECT["optional-dependencies"])


def test_environment_python_satisfies_requires_python():
    python = next(d for d in _conda()["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = tuple(int(x) for x in python.split("=")[-1].split("."))
    minimum = tuple(int(x) for x in PROJECT["requires-python"].lstrip(">=").split("."))
    assert version >= minimum


def test_constraints_pin_every_torch_package_exactly():
    pinned = pins("constraints.txt")
    assert pinned.keys() >= {"torch", "torchvision"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pinned.values())
    assert set(pinned) <= {requirement_name(r) for r in PROJECT["dependencies"]}


@pytest.mark.parametrize("requirement", PROJECT["dependencies"])
def test_each_core_floor_is_the_version_make_test_floor_installs(requirement):
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
    assert match, f"core requirement {requirement!r} should be 'name>=floor'"
    name, floor = requirement_name(match.group(1)), match.group(2)
    pinned = pins("constraints-floor.txt")[name]
    assert pinned.split(".")[:len(floor.split("."))] == floor.split("."), (name, floor, pinned)


def test_requires_python_is_the_python_make_test_floor_uses():
    floor = PROJECT["requires-python"].removeprefix(">=")
    assert f"FLOOR_VERSION := {floor}\n" in (REPO_ROOT / "Makefile").read_text()
