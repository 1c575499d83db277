"""save_checkpoint and load_checkpoint: atomic writes, plain extras, checks before loading, clear errors."""
from __future__ import annotations

import copy
import os
import pickle
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import engine


def _net(seed: int = 0, hidden: int = 16) -> nn.Module:
    """A tiny classifier of 2-d points into 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _trained(seed: int = 0, hidden: int = 16) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A ``_net`` and its SGD optimizer after one step, so the optimizer holds momentum buffers."""
    model = _net(seed, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(8, 2, generator=torch.Generator().manual_seed(seed)), torch.arange(8) % 3
    engine.train_step(model, images, labels, optimizer, nn.CrossEntropyLoss())
    return model, optimizer


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Deep copies of the model's and the optimizer's state dicts."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def _assert_state_equals(before: tuple[dict, dict], model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The model's and optimizer's state are bit-identical to the ``_snapshot`` ``before``."""
    model_before, optimizer_before = before
    model_now, optimizer_now = _snapshot(model, optimizer)
    assert model_now.keys() == model_before.keys()
    assert all(torch.equal(model_now[name], model_before[name]) for name in model_before), "the weights changed"
    assert optimizer_now["param_groups"] == optimizer_before["param_groups"]
    assert optimizer_now["state"].keys() == optimizer_before["state"].keys()
    for index, state in optimizer_before["state"].items():
        assert all(torch.equal(optimizer_now["state"][index][k], v) for k, v in state.items()), "the optimizer changed"


def test_checkpoint_round_trip_restores_model_optimizer_and_extras(tmp_path):
    model, optimizer = _trained()
    path = engine.save_checkpoint(tmp_path / "sub" / "net.pt", model, optimizer, epoch=3, history={"a": [0.5]})
    other = _net(seed=7)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    extras = engine.load_checkpoint(path, other, other_optimizer)
    assert extras == {"epoch": 3, "history": {"a": [0.5]}}
    _assert_state_equals(_snapshot(model, optimizer), other, other_optimizer)
    assert os.listdir(tmp_path / "sub") == ["net.pt"]


def _evaluation() -> dict:
    """What ``engine.evaluate`` returns: NumPy arrays (confusion, iou with NaN) next to Python numbers."""
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    loader = DataLoader(TensorDataset(logits, torch.tensor([0, 1, 1])), batch_size=2)
    return engine.evaluate(nn.Identity(), loader, num_classes=3, device="cpu")


_HISTORY = engine.History(train_loss=[1.0, 0.5], val_accuracy=[0.25, 0.75], lr=[0.1, 0.1], best_epoch=1)

EXTRAS = {
    "numpy float": (np.float64(0.25), 0.25),
    "numpy float32": (np.float32(0.5), 0.5),
    "numpy int": (np.int64(4), 4),
    "numpy bool": (np.bool_(True), True),
    "numpy array": (np.arange(6.0).reshape(2, 3), torch.arange(6.0, dtype=torch.float64).reshape(2, 3)),
    "reversed big-endian array": (np.arange(4, dtype=">i4")[::-1], torch.tensor([3, 2, 1, 0], dtype=torch.int32)),
    "History": (_HISTORY, _HISTORY.to_dict()),
    "Path": (Path("runs") / "net.pt", os.path.join("runs", "net.pt")),
    "nested": ({"best": (np.int64(2), [np.float64(0.5), None, "x"]), np.int64(7): Path("p")},
               {"best": (2, [0.5, None, "x"]), 7: "p"}),
    "plain": ({"epoch": 3, "note": "ok", "t": torch.ones(2)}, {"epoch": 3, "note": "ok", "t": torch.ones(2)}),
}


def _assert_same(loaded, expected) -> None:
    """``loaded`` equals ``expected`` item by item and is of the same plain types (NaN equals NaN)."""
    assert type(loaded) is type(expected), (loaded, expected)
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(loaded, expected, rtol=0, atol=0, equal_nan=True)
    elif isinstance(expected, dict):
        assert loaded.keys() == expected.keys()
        for key in expected:
            _assert_same(loaded[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(loaded) == len(expected)
        for a, b in zip(loaded, expected):
            _assert_same(a, b)
    else:
        assert loaded == expected or (loaded != loaded and expected != expected)


@pytest.mark.parametrize("case", EXTRAS)
def test_extras_that_save_also_load_with_weights_only(tmp_path, case):
    value, expected = EXTRAS[case]
    path = engine.save_checkpoint(tmp_path / "net.pt", _net(), extra=value)
    _assert_same(engine.load_checkpoint(path, _net())["extra"], expected)


def test_the_evaluate_dict_saves_and_loads_as_plain_numbers_and_tensors(tmp_path):
    metrics = _evaluation()
    metrics["best"] = np.float64(metrics["accuracy"])
    path = engine.save_checkpoint(tmp_path / "net.pt", _net(), metrics=metrics)
    loaded = engine.load_checkpoint(path, _net())["metrics"]
    expected = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in metrics.items()}
    expected["best"] = float(metrics["accuracy"])
    _assert_same(loaded, expected)
    assert loaded["confusion"].dtype == torch.int64 and torch.isnan(loaded["iou"]).any()


@pytest.mark.parametrize("extra, where, type_name", [
    ({"metrics": {"confusion": object()}}, "metrics.confusion", "object"),
    ({"classes": {"cat", "dog"}}, "classes", "set"),
    ({"runs": [1, 2, b"raw"]}, "runs[2]", "bytes"),
    ({"z": 1 + 2j}, "z", "complex"),
    ({"labels": np.array(["cat", "dog"])}, "labels", "<U3"),
    ({"scores": np.ma.array([0.5, 0.7], mask=[False, True])}, "scores", "masked array"),
    ({"model_class": nn.Linear}, "model_class", "type"),
    ({"pairs": {(0, 1): 0.5}}, "pairs", "tuple"),
    ({"log": (lambda d: d.update(again=d) or d)({"a": 1})}, "log.again", "a container that contains itself"),
])
def test_extras_that_would_not_load_are_refused_before_anything_is_written(tmp_path, extra, where, type_name):
    target = tmp_path / "runs" / "net.pt"
    with pytest.raises(TypeError, match=rf"extra '{re.escape(where)}'.*{type_name}"):
        engine.save_checkpoint(target, _net(), **extra)
    assert not target.parent.exists()
    path = engine.save_checkpoint(tmp_path / "net.pt", _net())
    before = path.read_bytes()
    with pytest.raises(TypeError, match=re.escape(where)):
        engine.save_checkpoint(path, _net(seed=1), **extra)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["net.pt"]


def test_checkpoint_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "net.pt"
    engine.save_checkpoint(path, _net())
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        engine.save_checkpoint(path, _net(seed=1))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["net.pt"], "no temporary file may be left behind"


def test_a_save_removes_stale_temp_files_of_killed_saves_to_the_same_target(tmp_path):
    hours_ago = time.time() - 2 * 3600
    stale = [tmp_path / ".net.pt.k1l3d_0x.tmp", tmp_path / ".net.pt.0123456789abcdef.tmp"]
    kept = [tmp_path / ".net.pt.inflight.tmp",  # recent: a save running right now
            tmp_path / ".other.pt.k1l3d_0x.tmp",  # another target
            tmp_path / ".net.pt.x.k1l3d_0x.tmp",  # a temp file of the target net.pt.x
            tmp_path / "notes.tmp"]
    for file in stale + kept:
        file.write_bytes(b"half a checkpoint")
    for file in stale + kept[1:]:
        os.utime(file, (hours_ago, hours_ago))
    engine.save_checkpoint(tmp_path / "net.pt", _net())
    assert sorted(os.listdir(tmp_path)) == sorted(["net.pt"] + [file.name for file in kept])


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_a_checkpoint_gets_the_mode_of_a_new_file(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = engine.save_checkpoint(tmp_path / "net.pt", _net())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_a_missing_checkpoint_says_to_train_and_save_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*missing\.pt.*save_checkpoint"):
        engine.load_checkpoint(tmp_path / "missing.pt", _net())


def _good_bytes(tmp_path: Path) -> bytes:
    """The bytes of a good checkpoint."""
    return engine.save_checkpoint(tmp_path / "good.pt", _net()).read_bytes()


def _saved(obj):
    """A function of ``tmp_path`` that returns the bytes ``torch.save(obj)`` writes."""
    def write(tmp_path: Path) -> bytes:
        torch.save(obj, tmp_path / "other.pt")
        return (tmp_path / "other.pt").read_bytes()
    return write


UNREADABLE = {
    "empty": lambda tmp_path: b"",
    "truncated": lambda tmp_path: _good_bytes(tmp_path)[:300],
    "one byte short": lambda tmp_path: _good_bytes(tmp_path)[:-1],  # torch raises OSError for this one
    "corrupt header": lambda tmp_path: b"XXXX" + _good_bytes(tmp_path)[4:],
    "text": lambda tmp_path: b"not a checkpoint\n",
    # as the old save_checkpoint wrote a NumPy float extra: outside the weights_only allow-list
    "pickled numpy objects": _saved({"model": _net().state_dict(), "best": np.float64(0.5)}),
    "plain pickle": lambda tmp_path: pickle.dumps({"model": _net().state_dict()}, protocol=2),
    "a list": _saved([1, 2, 3]),
    "a bare state dict": _saved(_net().state_dict()),
    "model is not a dict": _saved({"model": [1, 2]}),
}


@pytest.mark.parametrize("case", UNREADABLE)
def test_an_unreadable_file_is_one_clear_error_and_changes_nothing(tmp_path, case):
    content = UNREADABLE[case](tmp_path)
    path = tmp_path / "net.pt"
    path.write_bytes(content)
    model, optimizer = _trained()
    before = _snapshot(model, optimizer)
    with pytest.raises(engine.CheckpointError, match="not a readable coursekit checkpoint") as caught:
        engine.load_checkpoint(path, model, optimizer)
    message = str(caught.value)
    assert str(path) in message and "delete it and train and save" in message
    assert "weights_only=False" not in message and caught.value.__cause__ is None
    _assert_state_equals(before, model, optimizer)
    assert path.read_bytes() == content


def test_a_size_mismatch_names_the_layers_and_changes_nothing(tmp_path):
    path = engine.save_checkpoint(tmp_path / "net.pt", *_trained())
    model, optimizer = _trained(seed=1, hidden=32)
    before = _snapshot(model, optimizer)
    with pytest.raises(engine.CheckpointError, match=r"does not fit this model \(shape mismatches 1\.weight \(16, 2\) "
                                                     r"in the file, \(32, 2\) in the model, .*, 3\.weight \(3, 16\) "
                                                     r"in the file, \(3, 32\) in the model\); load it into the model"):
        engine.load_checkpoint(path, model, optimizer)
    _assert_state_equals(before, model, optimizer)


def test_missing_and_unexpected_keys_are_named_and_change_nothing(tmp_path):
    small = nn.Sequential(nn.Flatten(), nn.Linear(2, 16))
    path = engine.save_checkpoint(tmp_path / "net.pt", small)
    model, optimizer = _trained()
    before = _snapshot(model, optimizer)
    with pytest.raises(engine.CheckpointError, match=r"missing keys 3\.weight, 3\.bias\)"):
        engine.load_checkpoint(path, model, optimizer)
    _assert_state_equals(before, model, optimizer)
    path = engine.save_checkpoint(tmp_path / "net.pt", *_trained())
    small_optimizer = torch.optim.SGD(small.parameters(), lr=0.1)
    before = _snapshot(small, small_optimizer)
    with pytest.raises(engine.CheckpointError, match=r"unexpected keys 3\.weight, 3\.bias\)"):
        engine.load_checkpoint(path, small, small_optimizer)
    _assert_state_equals(before, small, small_optimizer)


def test_a_missing_optimizer_state_is_reported_before_the_weights_change(tmp_path):
    path = engine.save_checkpoint(tmp_path / "net.pt", _trained()[0])
    model, optimizer = _trained(seed=1)
    before = _snapshot(model, optimizer)
    with pytest.raises(engine.CheckpointError, match="no optimizer state; load it without an optimizer"):
        engine.load_checkpoint(path, model, optimizer)
    _assert_state_equals(before, model, optimizer)


def test_optimizer_groups_that_differ_are_reported_before_the_weights_change(tmp_path):
    path = engine.save_checkpoint(tmp_path / "net.pt", *_trained())
    model, _ = _trained(seed=1)
    parameters = list(model.parameters())
    two_groups = torch.optim.SGD([{"params": parameters[:2]}, {"params": parameters[2:]}], lr=0.1, momentum=0.9)
    first_layer_only = torch.optim.SGD(parameters[:2], lr=0.1, momentum=0.9)
    for optimizer, sizes in ((two_groups, r"\[2, 2\]"), (first_layer_only, r"\[2\]")):
        before = _snapshot(model, optimizer)
        with pytest.raises(engine.CheckpointError, match=rf"groups of sizes \[4\], but this optimizer's have {sizes}"):
            engine.load_checkpoint(path, model, optimizer)
        _assert_state_equals(before, model, optimizer)


def test_state_of_another_kind_of_optimizer_is_refused_and_changes_nothing(tmp_path):
    path = engine.save_checkpoint(tmp_path / "net.pt", *_trained())
    model, _ = _trained(seed=1)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    engine.train_step(model, torch.randn(4, 2), torch.arange(4) % 3, adam, nn.CrossEntropyLoss())
    before = _snapshot(model, adam)
    with pytest.raises(engine.CheckpointError, match="optimizer state that this Adam cannot take"):
        engine.load_checkpoint(path, model, adam)
    _assert_state_equals(before, model, adam)


def test_a_checkpoint_loads_into_a_lazy_model(tmp_path):
    model, optimizer = _trained()
    path = engine.save_checkpoint(tmp_path / "net.pt", model)
    lazy = nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(3))
    engine.load_checkpoint(path, lazy)
    assert torch.equal(lazy[3].weight, model[3].weight)
