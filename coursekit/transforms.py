"""Joint (image, target) transforms for semantic segmentation.

A segmentation sample is a pair: an RGB image and a label map of the same
size, one class id per pixel and 255 for "void" (pixels to ignore). Every
geometric change (flip, crop, resize) must move both in the same way, with the
same random numbers, and the label map must only ever be *resampled*, never
blended: it is resized with nearest-neighbour so no class id appears that was
not there before. Photometric changes (normalisation) touch the image only.

Every transform is called as ``image, target = t(image, target)``. The
geometric ones accept PIL images (image RGB, target mode ``P``/``L``) or
tensors (image ``C×H×W``, target ``H×W``) and return the same kind.
``JointToTensor`` turns a PIL pair into tensors: image float32 ``3×H×W`` in
[0, 1], target int64 ``H×W`` with 255 kept. ``JointNormalize`` expects those
tensors.

Random choices use torch's generator (``torch.rand``/``torch.randint``), so
``coursekit.config.seed_everything`` makes them repeatable.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VOID = 255

Pair = tuple[object, object]


def spatial_size(x) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or a ``...×H×W`` tensor."""
    if isinstance(x, Image.Image):
        return x.height, x.width
    if isinstance(x, torch.Tensor) and x.ndim >= 2:
        return int(x.shape[-2]), int(x.shape[-1])
    raise TypeError(f"expected a PIL image or a tensor of shape ...×H×W, got {type(x).__name__}"
                    + (f" with shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else ""))


def _pair_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """An int or ``(h, w)`` as a checked ``(h, w)`` tuple of positive ints."""
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {size!r}")
    return size


def _on_target(op: Callable, target, *args, **kwargs):
    """Apply a ``v2.functional`` op to a target: PIL as is, an ``H×W`` tensor as ``1×H×W``."""
    if isinstance(target, torch.Tensor):
        return op(target.unsqueeze(0), *args, **kwargs).squeeze(0)
    return op(target, *args, **kwargs)


def crop_with_void(image, target, top: int, left: int, height: int, width: int) -> Pair:
    """Cut the box ``(top, left, height, width)`` out of both image and target.

    The box may reach outside the image (negative ``top``/``left`` or past the
    far edge); the missing part is filled with 0 (black) in the image and with
    255 (void) in the target, so padding is never mistaken for background.
    """
    img_h, img_w = spatial_size(image)
    pad_left, pad_top = max(0, -left), max(0, -top)
    pad_right, pad_bottom = max(0, left + width - img_w), max(0, top + height - img_h)
    if pad_left or pad_top or pad_right or pad_bottom:
        padding = [pad_left, pad_top, pad_right, pad_bottom]
        image = F.pad(image, padding, fill=0)
        target = _on_target(F.pad, target, padding, fill=VOID)
    top, left = top + pad_top, left + pad_left
    return F.crop(image, top, left, height, width), _on_target(F.crop, target, top, left, height, width)


def resize_pair(image, target, size: tuple[int, int]) -> Pair:
    """Resize both to ``size = (height, width)``: the image bilinearly, the target with pixel-centred nearest.

    Nearest-neighbour samples at pixel centres (PIL's ``NEAREST``, torch's
    ``nearest-exact``), as the bilinear image does, so no class id is invented
    and the target stays aligned with the image.
    """
    image = F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    target = _on_target(F.resize, target, list(size), interpolation=InterpolationMode.NEAREST_EXACT)
    return image, target


def _centre_offset(length: int, crop: int) -> int:
    """Where a centred crop of ``crop`` pixels starts (negative when it overhangs), as torchvision rounds it."""
    if length >= crop:
        return int(round((length - crop) / 2.0))
    return -((crop - length) // 2)


class JointCompose:
    """Apply joint transforms in order, checking that image and target stay the same size.

    Args:
        transforms: callables ``(image, target) -> (image, target)``.

    Raises:
        ValueError: when image and target sizes differ before or after a step,
            naming the step, so a transform that moved only one of them is found at once.
    """

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"JointCompose takes callables (image, target) -> (image, target); got {t!r}")

    def __call__(self, image, target) -> Pair:
        self._check_sizes(image, target, "before the first transform")
        for step, t in enumerate(self.transforms, start=1):
            image, target = t(image, target)
            self._check_sizes(image, target, f"after step {step} ({type(t).__name__})")
        return image, target

    @staticmethod
    def _check_sizes(image, target, when: str) -> None:
        image_size, target_size = spatial_size(image), spatial_size(target)
        if image_size != target_size:
            raise ValueError(f"JointCompose: {when} the image is {image_size[0]}×{image_size[1]} but the target is "
                             f"{target_size[0]}×{target_size[1]} (height×width); a joint transform must give both "
                             "the same geometry.")

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"{type(self).__name__}([{inner}\n])"


class JointToTensor:
    """PIL pair → tensors: image float32 ``3×H×W`` in [0, 1]; target int64 ``H×W``, 255 kept.

    The image is converted to RGB first. The target must be a single-channel
    label map (PIL mode ``P``, ``L`` or ``I``): its pixel values are the class ids.
    """

    def __call__(self, image, target) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(image, Image.Image) or not isinstance(target, Image.Image):
            raise TypeError("JointToTensor converts PIL images; got "
                            f"{type(image).__name__} and {type(target).__name__}. Put it before tensor transforms "
                            "such as JointNormalize, and only once in a pipeline.")
        labels = np.array(target)
        if labels.ndim != 2:
            raise ValueError(f"the target must be a single-channel label map (PIL mode 'P', 'L' or 'I'), got mode "
                             f"{target.mode!r}; turn a colour-coded mask into class ids first.")
        tensor = F.to_dtype(F.to_image(image.convert("RGB")), torch.float32, scale=True)
        return tensor.as_subclass(torch.Tensor), torch.from_numpy(labels.astype(np.int64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class JointCenterCrop:
    """Cut the central ``size`` box out of image and target (pads 0 / 255 where the image is smaller).

    Args:
        size: an int for a square crop or ``(height, width)``.
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair_size(size)

    def __call__(self, image, target) -> Pair:
        height, width = spatial_size(image)
        top, left = _centre_offset(height, self.size[0]), _centre_offset(width, self.size[1])
        return crop_with_void(image, target, top, left, *self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class JointResize:
    """Resize image and target to one fixed size (image bilinear, target nearest).

    Args:
        size: an int for a square or ``(height, width)``.
    """

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair_size(size)

    def __call__(self, image, target) -> Pair:
        return resize_pair(image, target, self.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class RandomFlip:
    """Flip image and target left-right together with probability ``p``.

    One ``torch.rand`` draw decides for both, so they always stay aligned.
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p is a probability in [0, 1], got {p}")
        self.p = p

    def __call__(self, image, target) -> Pair:
        if torch.rand(1).item() < self.p:
            return F.horizontal_flip(image), F.horizontal_flip(target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomResizeCrop:
    """Scale by a random factor, then cut a random ``size`` window; same numbers for image and target.

    Scaling by ``s`` and cutting ``size`` pixels is done as one step: a box of
    ``size / s`` pixels is chosen in the original image and resized to
    ``size`` (image bilinear with antialiasing, target nearest-neighbour, so no
    new class ids appear). Nearest-neighbour here samples at pixel centres
    (PIL's ``NEAREST``, torch's ``nearest-exact``), as the bilinear image does;
    torch's plain ``nearest`` would shift the target by up to half a pixel. The box lies inside the image whenever the scaled
    image is at least ``size``; otherwise the scaled image is placed at a
    random position inside the ``size`` window and the rest is padded with 0
    in the image and 255 (void) in the target, so padding is ignored by the loss.

    Args:
        min_scale, max_scale: the range of the scale factor (``0 < min_scale <= max_scale``),
            drawn uniformly.
        size: the output size, an int for a square or ``(height, width)``.
    """

    def __init__(self, min_scale: float, max_scale: float, size: int | Sequence[int]):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.size = _pair_size(size)

    def get_params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Draw the box ``(top, left, box_height, box_width)`` in an image of ``height × width`` pixels.

        Uses torch's generator: one ``torch.rand`` for the scale, then one
        ``torch.randint`` each for ``top`` and ``left``.
        """
        scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(1).item()
        box_h = max(1, round(self.size[0] / scale))
        box_w = max(1, round(self.size[1] / scale))
        top = int(torch.randint(min(0, height - box_h), max(0, height - box_h) + 1, (1,)).item())
        left = int(torch.randint(min(0, width - box_w), max(0, width - box_w) + 1, (1,)).item())
        return top, left, box_h, box_w

    def __call__(self, image, target) -> Pair:
        top, left, box_h, box_w = self.get_params(*spatial_size(image))
        image, target = crop_with_void(image, target, top, left, box_h, box_w)
        return resize_pair(image, target, self.size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_scale={self.min_scale}, max_scale={self.max_scale}, "
                f"size={self.size})")


class JointNormalize:
    """Normalise the image channel-wise, ``(x - mean) / std``; the target passes through untouched.

    Args:
        mean, std: one value per channel (default: ImageNet statistics, which
            pretrained torchvision backbones expect).

    Expects the tensors of ``JointToTensor`` (image float ``3×H×W``).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise ValueError(f"mean and std need one value per channel and std > 0; got {self.mean}, {self.std}")

    def __call__(self, image, target) -> Pair:
        if not isinstance(image, torch.Tensor) or not image.is_floating_point():
            got = f"a {image.dtype} tensor" if isinstance(image, torch.Tensor) else type(image).__name__
            raise TypeError(f"JointNormalize needs a float image tensor (C×H×W), got {got}; "
                            "put JointToTensor before it.")
        return F.normalize(image, list(self.mean), list(self.std)), target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"
