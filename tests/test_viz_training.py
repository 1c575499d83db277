"""Training figures: learning curves, confusion matrix, per-class bars, image grids."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from coursekit import viz
from coursekit.engine import History

NAMES = ["cat", "dog", "ship"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_history_draws_one_panel_per_recorded_metric():
    history = History(train_loss=[1.0, 0.5], val_loss=[1.1, 0.7], train_accuracy=[0.5, 0.7], val_accuracy=[0.4, 0.6])
    fig = viz.plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    loss_axes = fig.axes[0]
    assert [line.get_label() for line in loss_axes.get_lines()] == ["train", "val"]
    assert loss_axes.get_lines()[1].get_ydata().tolist() == [1.1, 0.7]
    assert loss_axes.get_xlabel() == "epoch"
    assert len(viz.plot_history({"val_miou": [0.1, 0.2, 0.3]}).axes) == 1
    with pytest.raises(ValueError, match="none of the metrics"):
        viz.plot_history({"lr": [0.1]})


def test_plot_confusion_normalises_rows_and_annotates():
    matrix = torch.tensor([[8, 2, 0], [0, 5, 5], [0, 0, 4]])
    fig = viz.plot_confusion(matrix, NAMES)
    ax = fig.axes[0]
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown[0], [0.8, 0.2, 0.0])
    assert [t.get_text() for t in ax.texts][:3] == ["0.80", "0.20", "0.00"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    raw = viz.plot_confusion(matrix.numpy(), NAMES, normalize=False).axes[0]
    assert raw.texts[0].get_text() == "8"
    with pytest.raises(ValueError, match="class names"):
        viz.plot_confusion(matrix, NAMES[:2])


def test_plot_per_class_single_and_grouped_series():
    fig = viz.plot_per_class([0.5, 0.25, np.nan], NAMES)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:2] == [0.5, 0.25] and np.isnan(heights[2])
    assert fig.axes[0].get_title() == "Per-class accuracy"
    grouped = viz.plot_per_class({"Net": [0.1, 0.2, 0.3], "BetterNet": [0.4, 0.5, 0.6]}, NAMES).axes[0]
    assert len(grouped.patches) == 6 and [t.get_text() for t in grouped.get_legend().get_texts()] == ["Net", "BetterNet"]
    with pytest.raises(ValueError, match="class names"):
        viz.plot_per_class([0.1, 0.2], NAMES)


def test_show_images_titles_each_image_and_hides_empty_cells():
    images = torch.rand(5, 3, 8, 8)
    fig = viz.show_images(images, titles=[f"img {i}" for i in range(5)], columns=3)
    assert len(fig.axes) == 6 and tuple(fig.get_size_inches()) == pytest.approx((4.8, 3.6))
    assert tuple(viz.show_images(images[:2], panel_inches=3.0).get_size_inches()) == pytest.approx((6.0, 3.2))
    assert [ax.get_title() for ax in fig.axes] == ["img 0", "img 1", "img 2", "img 3", "img 4", ""]
    normalised = (images - 0.5) / 0.25
    shown = viz.show_images(normalised, mean=[0.5] * 3, std=[0.25] * 3).axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(shown, images[0].permute(1, 2, 0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="one title per image"):
        viz.show_images(images, titles=["a"])
