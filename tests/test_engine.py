"""Training and evaluation loops on tiny models and synthetic tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import engine


def _blobs(n: int = 96, seed: int = 0) -> TensorDataset:
    """Three well-separated Gaussian classes as 'images' 2×1×1, labels int64."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.tensor([[3.0, 0.0], [-3.0, 3.0], [0.0, -3.0]])
    points = centres[labels] + 0.5 * torch.randn(n, 2, generator=g)
    return TensorDataset(points.view(n, 2, 1, 1), labels)


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def _loaders(batch_size: int = 32):
    return (DataLoader(_blobs(96, 0), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(_blobs(45, 1), batch_size=batch_size))


def _fit(model, epochs=3, lr=0.1, **kwargs):
    train, val = _loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return engine.fit(model, train, optimizer, nn.CrossEntropyLoss(), epochs=epochs, val_loader=val,
                      device="cpu", verbose=False, **kwargs)


def test_fit_lowers_the_loss_and_fills_the_history():
    history = _fit(_classifier(), epochs=4)
    assert len(history) == 4
    assert history.train_loss[-1] < history.train_loss[0] / 2
    assert history.val_accuracy[-1] > 0.9
    assert set(history.to_dict()) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr"}
    assert all(isinstance(v, float) for values in history.to_dict().values() for v in values)
    assert history.best_epoch == int(np.argmax(history.val_accuracy))


def test_fit_prints_one_rounded_line_per_epoch(capsys):
    train, val = _loaders()
    model = _classifier()
    engine.fit(model, train, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=2,
               val_loader=val, device="cpu")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: loss ") and "val_accuracy" in lines[0]


def test_fit_stops_on_a_nan_loss_with_epoch_batch_and_hint():
    train, _ = _loaders()
    model = _classifier()

    def exploding(logits, targets):
        return nn.functional.cross_entropy(logits, targets) * float("nan")

    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1: .*nan.*[Ll]ower the learning rate"):
        engine.fit(model, train, torch.optim.SGD(model.parameters(), lr=0.1), exploding, device="cpu", verbose=False)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "a NaN loss must not update the weights"


def test_train_step_updates_and_returns_the_loss_before_the_update():
    images, labels = _blobs(12).tensors
    model = _classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(images), labels).item()
    loss, logits = engine.train_step(model, images, labels, optimizer, nn.CrossEntropyLoss())
    assert loss == pytest.approx(expected) and logits.shape == (12, 3)
    second, _ = engine.train_step(model, images, labels, optimizer, nn.CrossEntropyLoss())
    assert second < loss


class _OwnLoss(nn.Module):
    """Returns its loss from model(images, targets) in train mode and logits otherwise."""

    def __init__(self):
        super().__init__()
        self.net = _classifier()

    def forward(self, images, targets=None):
        logits = self.net(images)
        if self.training:
            return nn.functional.cross_entropy(logits, targets)
        return logits


def test_fit_with_a_model_that_returns_its_own_loss():
    model = _OwnLoss()
    train, val = _loaders()
    history = engine.fit(model, train, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), None, epochs=3,
                         val_loader=val, device="cpu", verbose=False)
    assert history.train_accuracy == []
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_accuracy[-1] > 0.9


def test_restore_best_puts_back_the_best_epoch_weights(tmp_path):
    model = _classifier()
    # A learning rate this large makes later epochs worse than an early one.
    history = _fit(model, epochs=6, lr=3.0, restore_best=True, checkpoint_path=tmp_path / "best.pt")
    assert history.best_epoch == 0 and history.val_accuracy[-1] < history.best_score == max(history.val_accuracy)
    _, val = _loaders()
    assert engine.evaluate(model, val, device="cpu")["accuracy"] == pytest.approx(history.best_score)
    saved = engine.load_checkpoint(tmp_path / "best.pt", _classifier(1))
    assert saved["epoch"] == history.best_epoch
    assert saved["history"]["val_accuracy"][-1] == pytest.approx(history.best_score)


def test_monitor_loss_keeps_the_lowest_validation_loss():
    history = _fit(_classifier(), epochs=3, monitor="loss")
    assert history.best_score == min(history.val_loss)


def test_reduce_on_plateau_is_stepped_with_the_validation_metric():
    model = _classifier()
    train, val = _loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # mode='min' on an accuracy that rises or stays: with patience 0 every epoch without a new minimum halves the rate.
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=0)
    history = engine.fit(model, train, optimizer, nn.CrossEntropyLoss(), epochs=3, val_loader=val,
                         scheduler=scheduler, device="cpu", verbose=False)
    assert history.lr[0] == 0.1 and history.lr[-1] < 0.1
    assert scheduler.best == pytest.approx(min(history.val_accuracy))


def test_per_batch_scheduler_steps_once_per_batch():
    model = _classifier()
    train, val = _loaders()  # 3 batches per epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=6)
    engine.fit(model, train, optimizer, nn.CrossEntropyLoss(), epochs=2, scheduler=scheduler,
               scheduler_interval="batch", device="cpu", verbose=False)
    assert scheduler.last_epoch == 6


def test_fit_rejects_bad_arguments():
    model = _classifier()
    train, _ = _loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="monitor"):
        engine.fit(model, train, optimizer, nn.CrossEntropyLoss(), monitor="f1")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="per epoch"):
        engine.fit(model, train, optimizer, nn.CrossEntropyLoss(), scheduler=plateau, scheduler_interval="batch")


def test_evaluate_divides_by_the_evaluated_set_not_the_batches():
    # 10 samples in batches of 4 (4, 4, 2): per-batch averaging would weigh the last batch double.
    logits = torch.tensor([[5.0, 0.0]] * 10)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    model = nn.Identity()
    loader = DataLoader(TensorDataset(logits, labels), batch_size=4)
    scores = engine.evaluate(model, loader, num_classes=2, device="cpu")
    assert scores["accuracy"] == pytest.approx(0.8) and scores["count"] == 10
    per_sample = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert scores["loss"] == pytest.approx(per_sample.mean().item())
    assert scores["confusion"].tolist() == [[8, 0], [2, 0]]
    np.testing.assert_allclose(scores["class_accuracy"], [1.0, 0.0])


def test_evaluate_with_ignore_index_none_counts_class_255():
    logits = torch.zeros(2, 300)
    logits[:, 255] = 1.0
    loader = DataLoader(TensorDataset(logits, torch.tensor([255, 3])), batch_size=2)
    scores = engine.evaluate(nn.Identity(), loader, device="cpu", ignore_index=None)
    assert scores["count"] == 2 and scores["accuracy"] == pytest.approx(0.5)
    assert engine.evaluate(nn.Identity(), loader, device="cpu")["count"] == 1  # 255 is skipped by default


def test_evaluate_segmentation_skips_ignored_pixels_and_restores_the_mode():
    # logits N×K×H×W that predict class 1 on the left column and class 0 on the right one.
    logits = torch.zeros(2, 3, 2, 2)
    logits[:, 1, :, 0] = 4.0
    logits[:, 0, :, 1] = 4.0
    targets = torch.tensor([[[1, 0], [1, 255]], [[1, 2], [255, 255]]])
    model = nn.Identity().train()
    scores = engine.evaluate(model, DataLoader(TensorDataset(logits, targets), batch_size=1), num_classes=3,
                             device="cpu")
    assert model.training
    assert scores["count"] == 5 and scores["accuracy"] == pytest.approx(4 / 5)
    np.testing.assert_allclose(scores["iou"], [1 / 2, 1.0, 0.0])
    assert scores["miou"] == pytest.approx(0.5)
    valid = targets != 255
    expected = nn.functional.cross_entropy(logits, targets, ignore_index=255, reduction="sum") / valid.sum()
    assert scores["loss"] == pytest.approx(expected.item())


def test_fit_trains_a_segmentation_model_and_monitors_miou():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(16, 1, 8, 8, generator=g)
    targets = (images[:, 0] > 0).long()
    targets[:, 0, :] = 255
    loader = DataLoader(TensorDataset(images, targets), batch_size=8)
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, kernel_size=1)
    history = engine.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.5), nn.CrossEntropyLoss(ignore_index=255),
                         epochs=5, val_loader=loader, monitor="miou", device="cpu", verbose=False)
    assert history.val_miou[-1] > 0.9 and history.best_score == max(history.val_miou)


def test_fit_skips_a_batch_whose_targets_are_all_ignored():
    images = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = (images[:, 0] > 0).long()
    targets[:2] = 255  # the first batch of two is all void: its mean loss is 0/0
    torch.manual_seed(0)
    model = nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(images[2:]), targets[2:]).item()
    history = engine.fit(model, DataLoader(TensorDataset(images, targets), batch_size=2),
                         torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(ignore_index=255),
                         device="cpu", verbose=False)
    assert history.train_loss == [pytest.approx(expected)]  # the void batch neither counts nor updates


def test_evaluate_reads_torchvision_style_dict_outputs():
    class DictModel(nn.Module):
        def forward(self, x):
            return {"out": x, "aux": x}

    loader = DataLoader(TensorDataset(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])), batch_size=2)
    assert engine.evaluate(DictModel(), loader, device="cpu")["accuracy"] == pytest.approx(0.5)


def test_evaluate_of_an_empty_loader_is_a_clear_error():
    with pytest.raises(ValueError, match="no batches"):
        engine.evaluate(nn.Identity(), [], num_classes=2, device="cpu")


def test_predict_batches_and_returns_labels_on_the_cpu():
    model = _classifier()
    images, labels = _blobs(20).tensors
    out = engine.predict(model, images, batch_size=7, device="cpu")
    assert out.dtype == torch.int64 and out.shape == (20,)
    assert torch.equal(out, model(images).argmax(dim=1))
    with pytest.raises(ValueError, match="unsqueeze"):
        engine.predict(model, images[0], device="cpu")


def test_history_to_dict_skips_empty_lists():
    history = engine.History(train_loss=[1.0, math.pi])
    assert history.to_dict() == {"train_loss": [1.0, math.pi]} and len(history) == 2


def test_batchnorm_losses_separate_running_from_batch_statistics_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1))
    model[1].running_var.fill_(1e-4)  # stale running averages, far from this data's statistics
    images, targets = torch.randn(6, 3, 6, 6), torch.randint(0, 4, (6, 6, 6))
    targets[0, 0, 0] = 255
    loader = DataLoader(TensorDataset(images, targets), batch_size=4)  # batches of 4 and 2 images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = engine.batchnorm_losses(model, loader)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # the caller's mode is kept

    def mean_loss(batch_mode):
        model.eval()
        model[1].train(batch_mode)
        return sum(F.cross_entropy(model(x), y, ignore_index=255).item() * len(x) for x, y in loader) / 6

    with torch.no_grad():
        assert losses["running_statistics"] == pytest.approx(mean_loss(False), rel=1e-5)
        assert losses["batch_statistics"] == pytest.approx(mean_loss(True), rel=1e-5)
    assert losses["running_statistics"] > 2 * losses["batch_statistics"]


def test_batchnorm_losses_refuses_an_empty_loader():
    with pytest.raises(ValueError, match="at least one batch"):
        engine.batchnorm_losses(nn.Conv2d(3, 2, 1), [])
