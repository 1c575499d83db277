"""Shared fixtures: an isolated data root and profile for every test."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

MIRROR = Path(os.environ.get("COURSEKIT_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def float32_engine(monkeypatch):
    """Every test computes in float32 with the usual memory layout, whatever the machine's CPU: the engine's
    defaults elsewhere depend on it (bf16 where the CPU has it, see ``coursekit.precision``). Tests of those
    defaults delete the two variables."""
    monkeypatch.setenv("COURSEKIT_PRECISION", "32")
    monkeypatch.setenv("COURSEKIT_CHANNELS_LAST", "0")


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh, writable, empty data root that is the only one searched (it is also ``COURSEKIT_HOME/data``)."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("COURSEKIT_DATA", str(root))
    monkeypatch.setenv("COURSEKIT_HOME", str(tmp_path))
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


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache under ``tmp_path`` and a network that always fails.

    ``TORCH_HOME`` points at ``tmp_path/torch``; ``torch.hub.download_url_to_file``
    raises ``URLError`` and records its calls. Returns
    ``SimpleNamespace(checkpoints=<cache folder>, calls=[(url, dst, hash_prefix, socket timeout), ...])``.
    """
    import socket
    import urllib.error
    from types import SimpleNamespace

    import torch.hub

    hub = SimpleNamespace(checkpoints=tmp_path / "torch" / "hub" / "checkpoints", calls=[])

    def refuse(url, dst, hash_prefix=None, progress=True):
        hub.calls.append((url, dst, hash_prefix, socket.getdefaulttimeout()))
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return hub


@pytest.fixture
def facade_counts(monkeypatch):
    """``facade_counts(n_base, n_extended=0)`` lets a kit-written CMP Facade test set of that size count as complete
    (the real archives hold 378 and 228 photo/label pairs, and a copy with fewer is refused)."""
    from coursekit.data import cmp_facade

    def expect(n_base: int, n_extended: int = 0) -> None:
        monkeypatch.setitem(cmp_facade.EXPECTED_PAIRS, "cmp_b", n_base)
        monkeypatch.setitem(cmp_facade.EXPECTED_PAIRS, "cmp_x", n_extended)

    return expect


@pytest.fixture(autouse=True)
def fresh_synthetic_notices():
    """Each test sees the once-per-process synthetic-data NOTE again."""
    from coursekit.data import locate

    locate._ANNOUNCED.clear()
    yield
    locate._ANNOUNCED.clear()
