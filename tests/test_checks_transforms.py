"""Each check passes on the reference and fails on the stub and on each typical mistake."""
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from coursekit import transforms as T
from coursekit.checks import transforms as checks
from coursekit.checks.report import CheckFailed


class Stub:
    """What the student starts from."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, image, target):
        raise NotImplementedError


# ----------------------------------------------------------------- flips

class FlipImageOnly(T.RandomFlip):
    def __call__(self, image, target):
        return (F.horizontal_flip(image) if torch.rand(1).item() < self.p else image), target


class FlipIndependently(T.RandomFlip):
    def __call__(self, image, target):
        if torch.rand(1).item() < self.p:
            image = F.horizontal_flip(image)
        if torch.rand(1).item() < self.p:
            target = F.horizontal_flip(target)
        return image, target


class FlipUpsideDown(T.RandomFlip):
    def __call__(self, image, target):
        if torch.rand(1).item() < self.p:
            return F.vertical_flip(image), F.vertical_flip(target)
        return image, target


class FlipAlways(T.RandomFlip):
    def __call__(self, image, target):
        return F.horizontal_flip(image), F.horizontal_flip(target)


# ----------------------------------------------------------------- resize crops

class CropBilinearTarget(T.RandomResizeCrop):
    def __call__(self, image, target):
        top, left, height, width = self.get_params(*T.spatial_size(image))
        image, target = T.crop_with_void(image, target, top, left, height, width)
        return (F.resize(image, list(self.size), antialias=True),
                F.resize(target, list(self.size), interpolation=InterpolationMode.BILINEAR, antialias=True))


class CropBoxOutside(T.RandomResizeCrop):
    """Picks the corner anywhere in the image, so the box hangs over the far edges."""

    def get_params(self, height, width):
        _, _, box_h, box_w = super().get_params(height, width)
        top = int(torch.randint(0, height, (1,)).item())
        left = int(torch.randint(0, width, (1,)).item())
        return top, left, box_h, box_w


class CropIndependently(T.RandomResizeCrop):
    def __call__(self, image, target):
        return super().__call__(image, target)[0], super().__call__(image, target)[1]


class CropIgnoringScale(T.RandomResizeCrop):
    def get_params(self, height, width):
        top, left, _, _ = super().get_params(height, width)
        return max(0, min(top, height - self.size[0])), max(0, min(left, width - self.size[1])), *self.size


class CropPaddingTargetWithZero(T.RandomResizeCrop):
    def __call__(self, image, target):
        top, left, height, width = self.get_params(*T.spatial_size(image))
        image = F.resized_crop(image, top, left, height, width, list(self.size), antialias=True)
        target = F.resized_crop(target, top, left, height, width, list(self.size),
                                interpolation=InterpolationMode.NEAREST)  # PIL pads with 0 = background
        return image, target


class CropFixed(T.RandomResizeCrop):
    def get_params(self, height, width):
        box_h, box_w = (round(s / self.min_scale) for s in self.size)
        return 0, 0, box_h, box_w


# ----------------------------------------------------------------- normalisation

class NormalizeTargetToo(T.JointNormalize):
    def __call__(self, image, target):
        image, _ = super().__call__(image, target)
        return image, (target.float() - self.mean[0]) / self.std[0]


class NormalizeTargetCastToFloat(T.JointNormalize):
    def __call__(self, image, target):
        return super().__call__(image, target.float())


class NormalizeSwapped(T.JointNormalize):
    def __call__(self, image, target):
        return F.normalize(image, list(self.std), list(self.mean)), target


# ----------------------------------------------------------------- tests

@pytest.mark.parametrize("check, reference", [
    (checks.check_random_flip, T.RandomFlip),
    (checks.check_random_resize_crop, T.RandomResizeCrop),
    (checks.check_joint_normalize, T.JointNormalize),
])
def test_check_passes_on_the_reference(check, reference, capsys):
    check(reference)
    assert capsys.readouterr().out == f"check passed: {reference.__name__}\n"


@pytest.mark.parametrize("check, cls, message", [
    (checks.check_random_flip, Stub, "not implemented"),
    (checks.check_random_flip, FlipImageOnly, "flip the target as well"),
    (checks.check_random_flip, FlipIndependently, "flipped only one of image and target"),
    (checks.check_random_flip, FlipUpsideDown, "upside down"),
    (checks.check_random_flip, FlipAlways, "p=0.0"),
    (checks.check_random_resize_crop, Stub, "not implemented"),
    (checks.check_random_resize_crop, CropBilinearTarget, "class ids that were not in the input"),
    (checks.check_random_resize_crop, CropBoxOutside, "reaches outside the image"),
    (checks.check_random_resize_crop, CropIndependently, "not transformed alike"),
    (checks.check_random_resize_crop, CropIgnoringScale, "enlarged twice"),
    (checks.check_random_resize_crop, CropPaddingTargetWithZero, "padded part of the target is not void"),
    (checks.check_random_resize_crop, CropFixed, "not random"),
    (checks.check_joint_normalize, Stub, "not implemented"),
    (checks.check_joint_normalize, NormalizeTargetToo, "leave the target untouched"),
    (checks.check_joint_normalize, NormalizeTargetCastToFloat, "leave the target untouched"),
    (checks.check_joint_normalize, NormalizeSwapped, "wrong values"),
], ids=lambda value: getattr(value, "__name__", None))
def test_check_catches(check, cls, message):
    with pytest.raises(CheckFailed, match=message):
        check(cls)


def reference_pipelines():
    sanity = T.JointCompose([T.JointToTensor(), T.JointNormalize()])
    train = T.JointCompose([T.RandomResizeCrop(0.5, 2.0, 48), T.RandomFlip(), T.JointToTensor(), T.JointNormalize()])
    val = T.JointCompose([T.JointToTensor(), T.JointNormalize()])
    return sanity, train, val


class PairList(torch.utils.data.Dataset):
    """A tiny dataset of colour-coded pairs passed through ``transforms``."""

    def __init__(self, count, transforms):
        self.pairs = [checks.make_pair(seed, 40, 48) for seed in range(count)]
        self.transforms = transforms

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.transforms(*self.pairs[index])


def test_pipeline_check_passes_on_reference_transforms_and_datasets(capsys):
    sanity, train, val = reference_pipelines()
    checks.check_pipelines(sanity, train, val)
    checks.check_pipelines(PairList(1, sanity), PairList(3, train), PairList(3, val))
    assert capsys.readouterr().out.count("check passed: pipelines") == 2


def test_pipeline_check_leaves_the_global_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    checks.check_pipelines(*reference_pipelines())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("mistake, message", [
    ("train_not_augmented", "train pipeline is not augmented"),
    ("val_augmented", "val pipeline is random"),
    ("not_normalised", "does not look normalised"),
    ("no_tensors", "float32 3×H×W tensor"),
    ("train_sizes_differ", "cannot be batched"),
    ("sanity_too_big", "single image"),
])
def test_pipeline_check_catches(mistake, message):
    sanity, train, val = reference_pipelines()
    to_tensor = T.JointCompose([T.JointToTensor()])
    sources = {
        "train_not_augmented": (sanity, val, val),
        "val_augmented": (sanity, train, train),
        "not_normalised": (to_tensor, train, val),
        "no_tensors": (T.JointCompose([T.RandomFlip(0.0)]), train, val),
        "train_sizes_differ": (sanity, T.JointCompose([T.RandomFlip(), T.JointToTensor(), T.JointNormalize()]), val),
        "sanity_too_big": (PairList(2, sanity), PairList(3, train), PairList(3, val)),
    }[mistake]
    with pytest.raises(CheckFailed, match=message):
        checks.check_pipelines(*sources)


def test_colour_coded_pairs_decode_back_to_their_targets():
    image, target = checks.make_pair(3, 24, 40, mode="L")
    assert image.mode == "RGB" and target.mode == "L" and image.size == target.size == (40, 24)
    labels = np.asarray(target).astype(np.int64)
    assert np.array_equal(checks.decode(np.asarray(image)), labels)
    assert checks.agreement(np.asarray(image), labels) == 1.0
    assert checks.agreement(np.asarray(image), labels[:, ::-1]) < 0.5
    black = np.zeros((2, 2, 3), np.uint8)
    assert (checks.decode(black) == 255).all()


def test_pipeline_check_rejects_something_that_is_neither_dataset_nor_transform():
    sanity, train, val = reference_pipelines()
    with pytest.raises(CheckFailed, match="dataset or a joint transform"):
        checks.check_pipelines(sanity, train, 3)
