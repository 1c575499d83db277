import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from coursekit import transforms as T


def pil_pair(height=30, width=40, seed=0):
    """A random RGB image and a 'P' label map with ids 0..20 and a void (255) band."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    labels = rng.integers(0, 21, (height, width)).astype(np.uint8)
    labels[:, :3] = 255
    return image, Image.fromarray(labels, "L").convert("P")


def as_mask(target):
    return tv_tensors.Mask(torch.from_numpy(np.asarray(target).astype(np.int64)))


def nearest_exact(mask, size):
    """Pixel-centred nearest resize of an integer ``H×W`` or ``1×H×W`` mask: torch's ``nearest-exact`` itself.

    (torchvision's Mask path is not the reference: older releases (0.21 and before) ignore
    ``NEAREST_EXACT`` for masks, and ``resized_crop`` still does, using the
    legacy ``nearest``, half a pixel off the bilinear image.)
    """
    mask = torch.as_tensor(mask)
    scaled = torch.nn.functional.interpolate(mask.reshape(1, 1, *mask.shape[-2:]).double(), size=list(size),
                                             mode="nearest-exact")
    return scaled.reshape(*mask.shape[:-2], *size).to(mask.dtype)


def mask_crop_resize(mask, top, left, height, width, size):
    """Crop + pixel-centred nearest resize of a mask tensor."""
    return nearest_exact(F.crop(torch.as_tensor(mask), top, left, height, width), size)


def test_spatial_size_of_pil_and_tensor():
    image, _ = pil_pair(30, 40)
    assert T.spatial_size(image) == (30, 40)
    assert T.spatial_size(torch.zeros(3, 5, 7)) == (5, 7)
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        T.spatial_size(np.zeros((5, 7)))


def test_joint_to_tensor_types_values_and_void():
    image, target = pil_pair()
    img, tgt = T.JointToTensor()(image, target)
    assert img.dtype == torch.float32 and img.shape == (3, 30, 40) and type(img) is torch.Tensor
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert torch.allclose(img, torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
    assert tgt.dtype == torch.int64 and tgt.shape == (30, 40)
    assert torch.equal(tgt, torch.from_numpy(np.asarray(target).astype(np.int64)))
    assert (tgt[:, :3] == 255).all()


def test_joint_to_tensor_rejects_colour_targets_and_tensors():
    image, target = pil_pair()
    with pytest.raises(ValueError, match="single-channel"):
        T.JointToTensor()(image, target.convert("RGB"))
    with pytest.raises(TypeError, match="PIL"):
        T.JointToTensor()(torch.zeros(3, 4, 4), torch.zeros(4, 4))


def test_center_crop_matches_torchvision():
    image, target = pil_pair(31, 40)
    img, tgt = T.JointCenterCrop((20, 25))(image, target)
    assert np.array_equal(np.asarray(img), np.asarray(F.center_crop(image, [20, 25])))
    assert torch.equal(torch.from_numpy(np.asarray(tgt).astype(np.int64)), F.center_crop(as_mask(target), [20, 25]))


def test_center_crop_pads_target_with_void():
    image, target = pil_pair(10, 12)
    img, tgt = T.JointCenterCrop(16)(image, target)
    img, tgt = np.asarray(img), np.asarray(tgt)
    assert img.shape == (16, 16, 3) and tgt.shape == (16, 16)
    assert np.array_equal(img, np.asarray(F.center_crop(image, [16, 16])))  # same placement, zero padding
    padded = np.ones((16, 16), bool)
    padded[3:13, 2:14] = False
    assert (tgt[padded] == 255).all() and (img[padded] == 0).all()
    assert np.array_equal(tgt[3:13, 2:14], np.asarray(target))


def test_crop_with_void_on_tensors():
    image = torch.rand(3, 4, 5)
    target = torch.arange(20).reshape(4, 5)
    img, tgt = T.crop_with_void(image, target, -1, 2, 6, 4)
    assert img.shape == (3, 6, 4) and tgt.shape == (6, 4)
    assert torch.equal(img[:, 1:5, :3], image[:, :, 2:])
    assert (img[:, 0] == 0).all() and (img[:, :, 3] == 0).all()
    assert torch.equal(tgt[1:5, :3], target[:, 2:]) and (tgt[0] == 255).all() and (tgt[:, 3] == 255).all()


def test_compose_runs_in_order_and_reports_size_mismatch():
    image, target = pil_pair()
    pipeline = T.JointCompose([T.JointCenterCrop(20), T.JointToTensor()])
    img, tgt = pipeline(image, target)
    assert img.shape == (3, 20, 20) and tgt.shape == (20, 20)
    assert "JointCenterCrop" in repr(pipeline)

    def crop_image_only(img, tgt):
        return F.center_crop(img, [10, 10]), tgt

    with pytest.raises(ValueError, match=r"after step 2 \(function\).*image is 10×10 but the target is 30×40"):
        T.JointCompose([T.JointToTensor(), crop_image_only])(image, target)
    with pytest.raises(ValueError, match="before the first transform"):
        T.JointCompose([])(image, target.resize((5, 5)))
    with pytest.raises(TypeError, match="callables"):
        T.JointCompose([3])


@pytest.mark.parametrize("as_tensors", [False, True])
def test_random_flip_matches_torchvision_and_flips_both(as_tensors):
    image, target = pil_pair()
    if as_tensors:
        image, target = T.JointToTensor()(image, target)
    img, tgt = T.RandomFlip(p=1.0)(image, target)
    expected_img = F.horizontal_flip(image)
    expected_tgt = F.horizontal_flip(as_mask(target) if not as_tensors else tv_tensors.Mask(target))
    assert np.array_equal(np.asarray(img), np.asarray(expected_img))
    assert np.array_equal(np.asarray(tgt), expected_tgt.numpy())
    assert T.RandomFlip(p=0.0)(image, target) == (image, target)


def test_random_flip_uses_torch_rng_and_keeps_pairs_together():
    image, target = T.JointToTensor()(*pil_pair())
    flip = T.RandomFlip()
    torch.manual_seed(3)
    first = [flip(image, target) for _ in range(40)]
    torch.manual_seed(3)
    second = [flip(image, target) for _ in range(40)]
    flipped = [torch.equal(img, image.flip(-1)) for img, _ in first]
    assert 5 < sum(flipped) < 35
    for (img, tgt), was_flipped, (img2, _) in zip(first, flipped, second):
        assert torch.equal(tgt, target.flip(-1) if was_flipped else target)
        assert torch.equal(img, img2)
    with pytest.raises(ValueError, match="probability"):
        T.RandomFlip(p=1.5)


def test_random_resize_crop_matches_torchvision_resized_crop():
    image, target = pil_pair(60, 80)
    crop = T.RandomResizeCrop(0.8, 1.6, 32)
    for seed in range(5):
        torch.manual_seed(seed)
        top, left, box_h, box_w = crop.get_params(60, 80)
        assert 0 <= top <= 60 - box_h and 0 <= left <= 80 - box_w
        assert round(32 / 1.6) <= box_h <= round(32 / 0.8)
        torch.manual_seed(seed)
        img, tgt = crop(image, target)
        expected_img = F.resized_crop(image, top, left, box_h, box_w, [32, 32],
                                      interpolation=InterpolationMode.BILINEAR, antialias=True)
        expected_tgt = mask_crop_resize(as_mask(target), top, left, box_h, box_w, [32, 32])
        assert np.array_equal(np.asarray(img), np.asarray(expected_img))
        assert np.array_equal(np.asarray(tgt), expected_tgt.numpy())


def test_random_resize_crop_on_tensors_matches_torchvision():
    image, target = T.JointToTensor()(*pil_pair(50, 45))
    crop = T.RandomResizeCrop(0.5, 2.0, (24, 28))
    torch.manual_seed(1)
    top, left, box_h, box_w = crop.get_params(50, 45)
    torch.manual_seed(1)
    img, tgt = crop(image, target)
    assert img.shape == (3, 24, 28) and tgt.shape == (24, 28) and tgt.dtype == torch.int64
    padding = [max(0, -left), max(0, -top), max(0, left + box_w - 45), max(0, top + box_h - 50)]
    expected_img = F.resized_crop(F.pad(image, padding, fill=0), top + padding[1], left + padding[0], box_h, box_w,
                                  [24, 28], antialias=True)
    expected_tgt = mask_crop_resize(F.pad(tv_tensors.Mask(target), padding, fill=255), top + padding[1],
                                    left + padding[0], box_h, box_w, [24, 28])
    assert torch.allclose(img, expected_img)
    assert torch.equal(tgt, torch.as_tensor(expected_tgt))


def test_random_resize_crop_target_is_nearest_keeps_void_and_pads_void():
    image, target = pil_pair(20, 24)
    labels = set(np.unique(np.asarray(target)).tolist())
    crop = T.RandomResizeCrop(0.5, 2.0, 40)
    torch.manual_seed(0)
    padded_seen = False
    for _ in range(20):
        img, tgt = crop(image, target)
        img, tgt = np.asarray(img), np.asarray(tgt)
        assert img.shape == (40, 40, 3) and tgt.shape == (40, 40)
        assert set(np.unique(tgt).tolist()) <= labels  # no new ids, 255 included
        black = (img == 0).all(axis=-1)
        padded_seen |= bool(black.any())
        assert (tgt[black] == 255).all()
    assert padded_seen


def test_random_resize_crop_is_seeded_by_torch_and_validates():
    image, target = pil_pair()
    crop = T.RandomResizeCrop(0.5, 1.5, 16)
    torch.manual_seed(7)
    first = [np.asarray(crop(image, target)[1]) for _ in range(3)]
    torch.manual_seed(7)
    second = [np.asarray(crop(image, target)[1]) for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], first[1])
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        T.RandomResizeCrop(2.0, 1.0, 16)
    with pytest.raises(ValueError, match="positive int"):
        T.RandomResizeCrop(1.0, 1.0, 0)


def test_joint_normalize_matches_torchvision_and_leaves_target():
    image, target = T.JointToTensor()(*pil_pair())
    kept = target.clone()
    img, tgt = T.JointNormalize(T.IMAGENET_MEAN, T.IMAGENET_STD)(image, target)
    assert torch.allclose(img, F.normalize(image, list(T.IMAGENET_MEAN), list(T.IMAGENET_STD)))
    assert tgt is target and torch.equal(tgt, kept)
    assert img.mean(dim=(1, 2)).abs().max() < 1.0 < img.abs().max()


def test_joint_normalize_asks_for_tensors_first():
    image, target = pil_pair()
    with pytest.raises(TypeError, match="put JointToTensor before it"):
        T.JointNormalize()(image, target)
    with pytest.raises(ValueError, match="std > 0"):
        T.JointNormalize((0.5,), (0.0,))


@pytest.mark.parametrize("as_tensors", [False, True])
def test_joint_resize_matches_torchvision_and_keeps_ids(as_tensors):
    image, target = pil_pair(30, 40)
    if as_tensors:
        image, target = T.JointToTensor()(image, target)
    img, tgt = T.JointResize((17, 23))(image, target)
    assert T.spatial_size(img) == T.spatial_size(tgt) == (17, 23)
    expected = F.resize(image, [17, 23], interpolation=InterpolationMode.BILINEAR, antialias=True)
    mask = nearest_exact(as_mask(target) if not as_tensors else target, [17, 23])
    assert np.array_equal(np.asarray(img), np.asarray(expected))
    assert np.array_equal(np.asarray(tgt).astype(np.int64), mask.numpy())
    assert set(np.unique(np.asarray(tgt))) <= set(np.unique(np.asarray(target)))
    assert repr(T.JointResize(8)) == "JointResize(size=(8, 8))"
    with pytest.raises(ValueError, match="positive"):
        T.JointResize(0)


def test_resize_pair_is_the_resize_of_random_resize_crop():
    image, target = pil_pair(30, 40)
    img, tgt = T.resize_pair(image, target, (12, 9))
    assert img.size == tgt.size == (9, 12)
