import os
import random

import numpy as np
import pytest
import torch

from coursekit import config


@pytest.fixture(autouse=True)
def fresh_device_cache():
    config.get_device.cache_clear()
    yield
    config.get_device.cache_clear()


def test_device_defaults_to_best_available(monkeypatch):
    monkeypatch.delenv("COURSEKIT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert config.get_device().type == expected


def test_device_override_and_cached(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    first = config.get_device()
    monkeypatch.setenv("COURSEKIT_DEVICE", "meta")
    assert first == torch.device("cpu") and config.get_device() is first


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_override_to_missing_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="COURSEKIT_DEVICE"):
        config.get_device()


def test_profile_from_environment(monkeypatch):
    for name in config.PROFILES:
        monkeypatch.setenv("COURSEKIT_PROFILE", name.upper())
        assert config.profile_name() == name


def test_profile_default_depends_on_cuda(monkeypatch):
    monkeypatch.delenv("COURSEKIT_PROFILE", raising=False)
    assert config.profile_name() == ("full" if torch.cuda.is_available() else "cpu")


def test_unknown_profile_is_rejected(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="ci, cpu, full"):
        config.profile_name()


def test_synthetic_allowed_only_in_ci_or_on_opt_in(monkeypatch):
    monkeypatch.delenv("COURSEKIT_SYNTHETIC", raising=False)
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    assert not config.synthetic_allowed()
    monkeypatch.setenv("COURSEKIT_SYNTHETIC", "1")
    assert config.synthetic_allowed()
    monkeypatch.delenv("COURSEKIT_SYNTHETIC")
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    assert config.synthetic_allowed()


def _draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_seed_everything_is_deterministic():
    config.seed_everything(123)
    first = _draws()
    generator = config.seed_everything(123)
    assert _draws() == first
    assert torch.rand(1, generator=generator).item() == torch.rand(1, generator=torch.Generator().manual_seed(123)).item()
    config.seed_everything(124)
    assert _draws() != first
    assert torch.are_deterministic_algorithms_enabled()


def test_seeded_training_step_is_reproducible():
    def step():
        config.seed_everything(7)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(step(), step()):
        assert torch.equal(a, b)


def test_data_roots_order_and_default(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("COURSEKIT_DATA", f"{a}{os.pathsep}{b}")
    assert config.data_roots() == [a.resolve(), b.resolve(), config.default_data_root()]
    monkeypatch.setenv("COURSEKIT_DATA", "")
    assert config.data_roots() == [config.default_data_root()]


def test_kit_home_is_the_checkout_by_default_and_set_by_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSEKIT_HOME", raising=False)
    assert config.is_checkout() and config.kit_home() == config.REPO_ROOT
    assert config.default_data_root() == config.REPO_ROOT / "data"
    monkeypatch.setenv("COURSEKIT_HOME", str(tmp_path / "drive"))
    assert config.default_data_root() == (tmp_path / "drive" / "data").resolve()
    assert config.checkpoint_dir() == (tmp_path / "drive" / "checkpoints").resolve()


def test_installed_kit_keeps_its_files_in_the_user_cache_not_site_packages(monkeypatch, tmp_path):
    site_packages = tmp_path / "site-packages"
    (site_packages / "coursekit").mkdir(parents=True)
    monkeypatch.setattr(config, "REPO_ROOT", site_packages)
    monkeypatch.delenv("COURSEKIT_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert not config.is_checkout()
    assert config.kit_home() == (tmp_path / "cache" / "coursekit").resolve()
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert config.default_data_root() == (tmp_path / "user" / ".cache" / "coursekit" / "data").resolve()


def test_writable_root_skips_read_only_roots(monkeypatch, tmp_path):
    read_only, writable = tmp_path / "ro", tmp_path / "rw"
    read_only.mkdir()
    monkeypatch.setenv("COURSEKIT_DATA", f"{read_only}{os.pathsep}{writable}")
    real_access = os.access
    monkeypatch.setattr(config.os, "access", lambda p, mode: False if p == read_only.resolve() else real_access(p, mode))
    assert config.writable_root() == writable.resolve()


def test_writable_root_picks_first_writable(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "new" / "folder"))
    assert config.writable_root() == (tmp_path / "new" / "folder").resolve()


def test_no_writable_root_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))
    monkeypatch.setattr(config, "_is_writable", lambda path: False)
    with pytest.raises(PermissionError, match="COURSEKIT_DATA"):
        config.writable_root()


def test_checksummed_mirror_is_never_written_to(monkeypatch, tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    (mirror / "SHA256SUMS").write_text("")
    monkeypatch.setenv("COURSEKIT_DATA", f"{mirror}{os.pathsep}{cache}")
    assert config.is_mirror(mirror) and not config.is_mirror(cache)
    assert config.writable_root() == cache.resolve()


def test_a_synthetic_setting_that_is_not_understood_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    for value, allowed in (("1", True), ("YES", True), ("true", True), ("0", False), ("no", False), ("", False)):
        monkeypatch.setenv("COURSEKIT_SYNTHETIC", value)
        assert config.synthetic_allowed() is allowed
    monkeypatch.setenv("COURSEKIT_SYNTHETIC", "on")
    with pytest.raises(ValueError, match="COURSEKIT_SYNTHETIC='on' is not understood; set it to 1"):
        config.synthetic_allowed()
