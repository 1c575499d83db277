import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from coursekit import viz
from coursekit.data.voc import VOC_CLASSES, VOC_PALETTE
from coursekit.transforms import IMAGENET_MEAN, IMAGENET_STD

SMALL_PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], dtype=np.uint8)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labels():
    return np.array([[0, 1, 2], [255, 1, 0]])


def test_colorize_mask_uses_palette_and_fixed_void_colour():
    out = viz.colorize_mask(labels(), SMALL_PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 1].tolist() == [255, 0, 0] and out[0, 2].tolist() == [0, 255, 0]
    assert out[1, 0].tolist() == list(viz.VOID_COLOUR)


def test_colorize_mask_takes_void_from_a_full_palette_and_any_input_kind():
    palette = np.zeros((256, 3), np.uint8)
    palette[255] = (1, 2, 3)
    palette[1] = (9, 9, 9)
    for mask in (labels(), torch.tensor(labels()), Image.fromarray(labels().astype(np.uint8), "L")):
        out = viz.colorize_mask(mask, palette)
        assert out[1, 0].tolist() == [1, 2, 3] and out[0, 1].tolist() == [9, 9, 9]
    flat = palette.reshape(-1).tolist()
    assert np.array_equal(viz.colorize_mask(labels(), flat), viz.colorize_mask(labels(), palette))


def test_colorize_mask_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"class ids \[7\].*only 3 colours"):
        viz.colorize_mask(np.array([[7, 0]]), SMALL_PALETTE)
    with pytest.raises(ValueError, match="argmax"):
        viz.colorize_mask(np.zeros((3, 4, 4)), SMALL_PALETTE)
    with pytest.raises(ValueError, match="K×3"):
        viz.colorize_mask(labels(), np.zeros((4, 2)))


def test_denormalize_inverts_normalisation_and_clamps():
    image = torch.rand(2, 3, 4, 5)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    normalised = (image - mean) / std
    assert torch.allclose(viz.denormalize(normalised, IMAGENET_MEAN, IMAGENET_STD), image, atol=1e-6)
    assert torch.allclose(viz.denormalize(normalised[0], IMAGENET_MEAN, IMAGENET_STD), image[0], atol=1e-6)
    assert viz.denormalize(torch.full((3, 2, 2), 10.0), IMAGENET_MEAN, IMAGENET_STD).max() == 1.0
    with pytest.raises(ValueError, match="3 channels"):
        viz.denormalize(normalised, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="C×H×W"):
        viz.denormalize(torch.zeros(4, 4), (0.5,), (0.5,))


def test_show_segmentation_grid_titles_mious_and_legend():
    images = torch.randn(2, 3, 6, 7)
    targets = torch.zeros(2, 6, 7, dtype=torch.int64)
    targets[:, 0] = 255
    targets[1, 2:] = 15
    predictions = torch.zeros(2, 6, 7, dtype=torch.int64)
    predictions[0, 3:] = 12
    fig = viz.show_segmentation(images, targets, predictions, palette=VOC_PALETTE, class_names=VOC_CLASSES,
                                titles=["a", "b"], mious=[0.5, 0.25], mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes[:3]] == ["a: image", "a: ground truth", "a: prediction (mIoU 0.500)"]
    assert axes[5].get_title() == "b: prediction (mIoU 0.250)"
    shown = axes[1].get_images()[0].get_array()
    assert np.array_equal(shown, viz.colorize_mask(targets[0], VOC_PALETTE))
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["background", "dog", "person", "void"]


def test_show_segmentation_defaults_to_voc_palette_and_two_columns():
    images = [Image.new("RGB", (5, 4), (10, 20, 30))]
    targets = [np.full((4, 5), 3)]
    fig = viz.show_segmentation(images, targets)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "image"
    assert np.array_equal(fig.axes[1].get_images()[0].get_array()[0, 0], VOC_PALETTE[3])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["class 3"]


def test_show_segmentation_rescales_unnormalised_tensors_for_display():
    image = torch.linspace(-2, 2, 3 * 4 * 4).reshape(3, 4, 4)
    fig = viz.show_segmentation([image], [np.zeros((4, 4), int)], palette=SMALL_PALETTE)
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    assert shown.min() == 0.0 and shown.max() == 1.0


def test_show_segmentation_checks_lengths():
    with pytest.raises(ValueError, match="one target"):
        viz.show_segmentation([torch.rand(3, 2, 2)] * 2, [np.zeros((2, 2), int)], palette=SMALL_PALETTE)
    with pytest.raises(ValueError, match="mious needs one entry per image"):
        viz.show_segmentation([torch.rand(3, 2, 2)], [np.zeros((2, 2), int)], [np.zeros((2, 2), int)],
                              palette=SMALL_PALETTE, mious=[0.1, 0.2])
    with pytest.raises(TypeError, match="show_pair"):
        viz.show_segmentation(Image.new("RGB", (2, 2)), [np.zeros((2, 2), int)], palette=SMALL_PALETTE)


def test_show_pair_one_row_with_title():
    image = Image.new("RGB", (8, 6))
    target = Image.fromarray(np.ones((6, 8), np.uint8), "L").convert("P")
    fig = viz.show_pair(image, target, palette=VOC_PALETTE, class_names=VOC_CLASSES, title="train 0")
    assert [ax.get_title() for ax in fig.axes] == ["train 0: image", "train 0: ground truth"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["aeroplane"]
