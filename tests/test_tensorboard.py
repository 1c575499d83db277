"""coursekit.tensorboard: what engine.fit hands the logger reaches TensorBoard's files, read back with
TensorBoard's own reader; logging changes nothing in training; it is off unless asked for."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import engine, tensorboard, viz

SCALARS = ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "miou/val", "lr")


def _segmentation_data(n: int = 16):
    """Images float32 n×1×8×8 and targets int64 n×8×8 (class 1 where the pixel is positive, a void top row)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 8, 8, generator=g)
    targets = (images[:, 0] > 0).long()
    targets[:, 0, :] = 255
    return images, targets


def _train(logger=None, epochs: int = 3):
    images, targets = _segmentation_data()
    loader = DataLoader(TensorDataset(images, targets), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    history = engine.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.5),
                         nn.CrossEntropyLoss(ignore_index=255), epochs=epochs, val_loader=loader, monitor="miou",
                         device="cpu", verbose=False, logger=logger)
    return model, history


def _pixels(image_event) -> np.ndarray:
    """A logged image as uint8 H×W×3."""
    return np.asarray(Image.open(io.BytesIO(image_event.encoded_image_string)).convert("RGB"))


def _read(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_fit_writes_every_epochs_scores_and_the_painted_predictions(tmp_path):
    images, targets = _segmentation_data()
    with tensorboard.TensorBoardLogger(tmp_path / "run", examples=(images[:3], targets[:3])) as logger:
        model, history = _train(logger)
    events = _read(tmp_path / "run")
    assert set(SCALARS) <= set(events.Tags()["scalars"])
    for tag, values in (("loss/train", history.train_loss), ("accuracy/train", history.train_accuracy),
                        ("loss/val", history.val_loss), ("miou/val", history.val_miou), ("lr", history.lr)):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in logged], values, rtol=1e-6)
    assert [e.step for e in events.Images("examples/input")] == [0]
    assert [e.step for e in events.Images("examples/target")] == [0]
    predictions = events.Images("examples/prediction")
    assert [e.step for e in predictions] == [1, 2, 3]
    # The last grid is the trained model's predictions for the three examples, painted side by side.
    expected = tensorboard.paint_labels(engine.predict(model, images[:3]))  # 3×3×8×8 in [0, 1]
    expected = (expected.permute(2, 0, 3, 1).reshape(8, 3 * 8, 3) * 255).numpy()
    np.testing.assert_allclose(_pixels(predictions[-1]), expected, atol=1)
    assert not np.array_equal(_pixels(predictions[0]), _pixels(predictions[-1]))  # the predictions changed


def test_logging_changes_nothing_in_training(tmp_path):
    images, targets = _segmentation_data()
    model, history = _train()
    with tensorboard.TensorBoardLogger(tmp_path, examples=(images[:2], targets[:2])) as logger:
        logged_model, logged_history = _train(logger)
    assert logged_history.to_dict() == history.to_dict()
    for (name, a), (_, b) in zip(model.state_dict().items(), logged_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_classifier_without_examples_logs_scalars_only(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 2, 1, 1, generator=g), torch.arange(32) % 2
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with tensorboard.TensorBoardLogger(tmp_path) as logger:
        engine.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), epochs=2,
                   device="cpu", verbose=False, logger=logger)
    events = _read(tmp_path)
    assert set(events.Tags()["scalars"]) == {"loss/train", "accuracy/train", "lr"}  # no validation loader
    assert events.Tags()["images"] == []


def test_paint_labels_uses_the_palette_and_the_void_colour():
    labels = torch.tensor([[[0, 1], [255, 1]]])
    palette = np.array([[10, 20, 30], [200, 100, 0]], dtype=np.uint8)
    painted = tensorboard.paint_labels(labels, palette)
    assert painted.shape == (1, 3, 2, 2) and painted.dtype == torch.float32
    assert torch.allclose(painted[0, :, 0, 0], torch.tensor([10, 20, 30]) / 255)
    assert torch.allclose(painted[0, :, 1, 1], torch.tensor([200, 100, 0]) / 255)
    assert torch.allclose(painted[0, :, 1, 0], torch.tensor(viz.VOID_COLOUR, dtype=torch.float32) / 255)
    assert tensorboard.paint_labels(torch.zeros(2, 4, 5, dtype=torch.long)).shape == (2, 3, 4, 5)  # VOC colours


def test_run_logger_is_off_unless_the_variable_names_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(tensorboard.ENV_VAR, raising=False)
    assert tensorboard.log_root() is None and tensorboard.run_logger("05/UNet") is None
    monkeypatch.setenv(tensorboard.ENV_VAR, "  ")
    assert tensorboard.run_logger("05/UNet") is None
    monkeypatch.setenv(tensorboard.ENV_VAR, str(tmp_path / "runs"))
    logger = tensorboard.run_logger("05/UNet")
    try:
        assert logger.log_dir == tmp_path / "runs" / "05" / "UNet"
        assert any((tmp_path / "runs" / "05" / "UNet").glob("events.out.tfevents.*"))
    finally:
        logger.close()


def test_a_missing_tensorboard_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(ImportError, match="pip install tensorboard.*unset COURSEKIT_TENSORBOARD"):
        tensorboard.TensorBoardLogger(tmp_path)
    assert not any(tmp_path.iterdir())


def test_first_examples_stacks_the_first_items_of_a_dataset():
    images, targets = _segmentation_data(5)
    dataset = TensorDataset(images, targets)
    shown_images, shown_targets = tensorboard.first_examples(dataset, 3)
    assert torch.equal(shown_images, images[:3]) and torch.equal(shown_targets, targets[:3])
    assert len(tensorboard.first_examples(dataset, 10)[0]) == 5
    with pytest.raises(ValueError, match="at least one item"):
        tensorboard.first_examples(dataset, 0)
