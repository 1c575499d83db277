import numpy as np
import pytest
from PIL import Image

from coursekit.data.arrays import ImageArrayDataset


def test_items_are_pil_images_and_int_targets():
    data = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    dataset = ImageArrayDataset(data, [5, 7])
    image, target = dataset[1]
    assert len(dataset) == 2 and isinstance(image, Image.Image) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), data[1]) and target == 7 and dataset.targets.dtype == np.int64
    grey = ImageArrayDataset(data[..., 0], np.array([1, 2]), transform=np.asarray, target_transform=lambda t: -t)
    image, target = grey[0]
    assert image.shape == (4, 4) and target == -1


def test_lengths_must_match():
    with pytest.raises(ValueError, match="2 images but 3 targets"):
        ImageArrayDataset(np.zeros((2, 4, 4), np.uint8), [0, 1, 2])
