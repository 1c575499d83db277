"""Shared fixtures: an isolated data root and profile for every test."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

MIRROR = Path(os.environ.get("COURSEKIT_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh, writable, empty data root that is the only one searched."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("COURSEKIT_DATA", str(root))
    monkeypatch.setattr("coursekit.config.DEFAULT_DATA_ROOT", root)
    return root


@pytest.fixture
def mirror(monkeypatch):
    """The read-only offline data mirror (skips the test where it is absent)."""
    root = Path(os.environ.get("COURSEKIT_DATA", "").split(os.pathsep)[0] or MIRROR)
    if not (root / "mnist").is_dir():
        root = MIRROR
    if not (root / "mnist").is_dir():
        pytest.skip("the offline data mirror (../shared/data) is not present")
    monkeypatch.setenv("COURSEKIT_DATA", str(root))
    return root
