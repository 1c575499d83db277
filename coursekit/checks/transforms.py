"""Checks for notebook 01 (joint transforms): run the student's classes on known pairs.

The test pairs are colour-coded: the label map is made of square blocks of
random class ids (some void), and each image pixel has the colour of its
class. After any correct joint transform every clean (unblended) image pixel
still shows the colour of the class under it, so decoding the image and
comparing it with the returned target shows whether both got the same crop,
flip and scale. Colours all have every channel >= 48, so black pixels can only
be padding.

The geometric checks call the student's transforms on PIL images (image RGB,
target mode ``P`` or ``L``), as they are used in the notebook: before
``JointToTensor``. Random generators are seeded inside each check and
restored afterwards, so a check never changes the notebook's random stream.
"""
from __future__ import annotations

import contextlib
import itertools
import random

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from ..transforms import IMAGENET_MEAN, IMAGENET_STD, VOID
from .report import expect, expect_close, fail, passed, run_student

NUM_CLASSES = 21
BLOCK = 8
PURE = 16  # a pixel within this many levels (per channel) of a class colour is "clean"
DARK = 24  # every channel below this: a padded (black) pixel
MIN_AGREEMENT = 0.9

# 21 class colours + 1 void colour, every channel in 48..240 and at least 64 apart in some channel.
_LEVELS = (48, 112, 176, 240)
COLOURS = np.array(list(itertools.product(_LEVELS, repeat=3))[::3][:NUM_CLASSES + 1], dtype=np.uint8)


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed Python, NumPy and torch for the block, then put their previous states back."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])


def make_pair(seed: int, height: int, width: int, mode: str = "P", void_fraction: float = 0.1):
    """A colour-coded test pair: PIL RGB image and PIL label map (``mode`` ``P`` or ``L``).

    The label map is ``BLOCK``-pixel squares of random ids in ``0..20``, a
    ``void_fraction`` of them 255; the image paints class ``k`` with ``COLOURS[k]``
    and void with ``COLOURS[21]``.
    """
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, NUM_CLASSES, size=(-(-height // BLOCK), -(-width // BLOCK)))
    grid[rng.random(grid.shape) < void_fraction] = VOID
    labels = np.kron(grid, np.ones((BLOCK, BLOCK), dtype=grid.dtype))[:height, :width].astype(np.uint8)
    image = COLOURS[np.where(labels == VOID, NUM_CLASSES, labels)]
    return Image.fromarray(image, "RGB"), Image.fromarray(labels, "L").convert(mode)


def decode(image: np.ndarray) -> np.ndarray:
    """Class ids read back from a colour-coded ``H×W×3`` uint8 image.

    Black (padding) and the void colour give 255; pixels blended between
    colours (near a block edge after resizing) give -1.
    """
    pixels = image.astype(np.int64)
    distance = np.abs(pixels[:, :, None, :] - COLOURS.astype(np.int64)[None, None]).max(axis=-1)
    labels = np.where(distance.min(axis=-1) <= PURE, distance.argmin(axis=-1), -1)
    labels = np.where(labels == NUM_CLASSES, VOID, labels)
    return np.where((pixels < DARK).all(axis=-1), VOID, labels)


def agreement(image: np.ndarray, target: np.ndarray) -> float:
    """Fraction of clean image pixels whose colour matches the class in ``target`` at the same place."""
    decoded = decode(image)
    clean = decoded >= 0
    return float((decoded[clean] == target[clean]).mean()) if clean.any() else 0.0


def _as_arrays(what: str, result) -> tuple[np.ndarray, np.ndarray]:
    """A transform's output as (uint8 ``H×W×3`` image, int64 ``H×W`` target) arrays."""
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what} should return a pair", "(image, target)", type(result).__name__,
             "end __call__ with `return image, target`.")
    image, target = result
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image * 255).round() if image.is_floating_point() else image
        image = image.permute(1, 2, 0).numpy()
    elif isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    else:
        fail(f"{what} returned an image of the wrong type", "a PIL image (or a tensor)", type(image).__name__,
             "return the transformed PIL image.")
    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    elif not isinstance(target, Image.Image):
        fail(f"{what} returned a target of the wrong type", "a PIL image (or a tensor)", type(target).__name__,
             "return the transformed PIL label map.")
    target = np.asarray(target)
    expect(target.ndim == 2, f"{what} returned a target that is not a label map", "shape H×W", target.shape,
           "keep the target single-channel (PIL mode 'P'/'L'); never convert it to RGB.")
    return np.clip(image, 0, 255).astype(np.uint8), target.astype(np.int64)


def _apply(what: str, transform, image, target) -> tuple[np.ndarray, np.ndarray]:
    return _as_arrays(what, run_student(what, transform, image, target))


def _expect_same_params(what: str, image: np.ndarray, target: np.ndarray) -> None:
    score = agreement(image, target)
    expect(score >= MIN_AGREEMENT, f"{what}: image and target were not transformed alike",
           f"at least {MIN_AGREEMENT:.0%} of clean pixels keep their class", f"{score:.0%}",
           "draw the random numbers once per call and apply the very same flip / box / size to both.")


def check_random_flip(cls) -> None:
    """Check a ``RandomFlip(p)`` class: left-right flip of both, together, with probability ``p``."""
    image, target = make_pair(1, 24, 40)
    img, tgt = np.asarray(image), np.asarray(target).astype(np.int64)
    with _seeded(0):
        flip = run_student("RandomFlip(p=1.0)", cls, p=1.0)
        out_img, out_tgt = _apply("RandomFlip(p=1.0)", flip, image, target)
        if np.array_equal(out_img, img[::-1]):
            fail("RandomFlip(p=1.0) flipped the image upside down", "a left-right flip", "an up-down flip",
                 "flip horizontally: Image.FLIP_LEFT_RIGHT or torchvision's hflip.")
        expect(np.array_equal(out_img, img[:, ::-1]), "RandomFlip(p=1.0) must flip the image left-right",
               "the mirrored image", "something else", "with p=1 every call flips.")
        expect(np.array_equal(out_tgt, tgt[:, ::-1]), "RandomFlip(p=1.0) must flip the target as well",
               "the mirrored target", "unflipped" if np.array_equal(out_tgt, tgt) else "something else",
               "apply the same flip to image and target.")
        out_img, out_tgt = _apply("RandomFlip(p=0.0)", run_student("RandomFlip(p=0.0)", cls, p=0.0), image, target)
        expect(np.array_equal(out_img, img) and np.array_equal(out_tgt, tgt),
               "RandomFlip(p=0.0) must leave image and target unchanged", "unchanged", "changed",
               "flip only when a random number in [0, 1) is below p.")
        half = run_student("RandomFlip(p=0.5)", cls, p=0.5)
        flips, trials = 0, 64
        for _ in range(trials):
            out_img, out_tgt = _apply("RandomFlip(p=0.5)", half, image, target)
            image_flipped, target_flipped = np.array_equal(out_img, img[:, ::-1]), np.array_equal(out_tgt, tgt[:, ::-1])
            expect(image_flipped == target_flipped, "RandomFlip(p=0.5) flipped only one of image and target",
                   "both flipped or neither", f"image flipped: {image_flipped}, target flipped: {target_flipped}",
                   "draw one random number per call and use it for both.")
            flips += image_flipped
    expect(trials // 4 <= flips <= 3 * trials // 4, "RandomFlip(p=0.5) should flip about half of the calls",
           f"about {trials // 2} of {trials}", flips, "compare one random number in [0, 1) with p.")
    passed("RandomFlip")


def _best_box_match(source: np.ndarray, out: np.ndarray, box_sizes) -> float:
    """Best fraction of ``out`` equal to a nearest-neighbour resize of some box of ``source`` inside it."""
    height, width = source.shape
    size_h, size_w = out.shape
    best = 0.0
    for box in box_sizes:
        if box > min(height, width):
            continue
        rows = ((np.arange(size_h) + 0.5) * box / size_h).astype(int)
        cols = ((np.arange(size_w) + 0.5) * box / size_w).astype(int)
        for top in range(height - box + 1):
            band = source[top + rows]
            for left in range(width - box + 1):
                best = max(best, float((band[:, left + cols] == out).mean()))
    return best


def check_random_resize_crop(cls) -> None:
    """Check a ``RandomResizeCrop(min_scale, max_scale, size)`` class on PIL pairs.

    Catches: the target resized with anything but nearest-neighbour, a crop box
    outside the image, different random numbers for image and target, the
    scale ignored, void (255) lost, and missing void padding when the scaled
    image is smaller than ``size``.
    """
    size = 32
    with _seeded(0):
        crop = run_student("RandomResizeCrop(1.0, 1.5, 32)", cls, 1.0, 1.5, size)
        for trial in range(6):
            image, target = make_pair(10 + trial, 48, 64, mode="PL"[trial % 2])
            what = f"RandomResizeCrop(1.0, 1.5, 32) on a 48×64 pair (target mode {target.mode!r})"
            out_img, out_tgt = _apply(what, crop, image, target)
            expect(out_img.shape[:2] == (size, size) and out_tgt.shape == (size, size), f"{what}: wrong output size",
                   f"image and target {size}×{size}", f"image {out_img.shape[:2]}, target {out_tgt.shape}",
                   "resize the cropped box to (size, size) for both.")
            new_ids = sorted(set(np.unique(out_tgt).tolist()) - set(np.unique(np.asarray(target)).tolist()))
            expect(not new_ids, f"{what}: the target has class ids that were not in the input", "no new ids",
                   new_ids, "resize the target with nearest-neighbour (Image.NEAREST / InterpolationMode.NEAREST); "
                   "any other interpolation blends class ids.")
            dark = int((out_img < DARK).all(axis=-1).sum())
            expect(dark == 0, f"{what}: the crop box reaches outside the image", "no padding (the scaled image is "
                   "larger than size here)", f"{dark} black padded pixels",
                   "choose top/left so the whole box lies inside the (scaled) image.")
            _expect_same_params(what, out_img, out_tgt)
        repeats = [_apply("RandomResizeCrop(1.0, 1.5, 32)", crop, image, target)[1] for _ in range(4)]
        expect(any(not np.array_equal(repeats[0], r) for r in repeats[1:]), "RandomResizeCrop is not random",
               "different crops of one pair on different calls", "the same crop every time",
               "draw the scale and the box position at random on every call.")

        image, target = make_pair(20, 48, 64)
        zoom = run_student("RandomResizeCrop(2.0, 2.0, 32)", cls, 2.0, 2.0, size)
        _, out_tgt = _apply("RandomResizeCrop(2.0, 2.0, 32)", zoom, image, target)
        match = _best_box_match(np.asarray(target).astype(np.int64), out_tgt, (15, 16, 17))
        expect(match >= MIN_AGREEMENT, "RandomResizeCrop(2.0, 2.0, 32) should show a 16×16 box of the image "
               "enlarged twice", f"a match of at least {MIN_AGREEMENT:.0%}", f"best match {match:.0%}",
               "scale by s means the box in the original image is size / s pixels wide, resized to size.")

        image, target = make_pair(30, 24, 20)
        what = "RandomResizeCrop(1.0, 1.0, 32) on a 24×20 pair (smaller than size)"
        out_img, out_tgt = _apply(what, run_student(what, cls, 1.0, 1.0, size), image, target)
        expect(out_img.shape[:2] == (size, size) and out_tgt.shape == (size, size), f"{what}: wrong output size",
               f"image and target {size}×{size}", f"image {out_img.shape[:2]}, target {out_tgt.shape}",
               "pad image and target up to size when the scaled image is smaller.")
        padded = (out_img < DARK).all(axis=-1)
        expect(padded.any(), f"{what}: expected padding", "black (0) padding around the 24×20 image",
               "no black pixels", "pad the image with 0 where the scaled image does not cover the window.")
        lost = sorted(set(np.unique(out_tgt[padded]).tolist()) - {VOID})
        expect(not lost, f"{what}: the padded part of the target is not void", "255 (void)", lost,
               "pad the target with 255 so the padding is ignored, never with 0 (that is 'background').")
        _expect_same_params(what, out_img, out_tgt)
    passed("RandomResizeCrop")


def check_joint_normalize(cls) -> None:
    """Check a ``JointNormalize(mean, std)`` class on tensors from ``JointToTensor``."""
    with _seeded(0):
        image = torch.rand(3, 12, 16)
        target = torch.randint(0, NUM_CLASSES, (12, 16))
        target[:3] = VOID
    normalize = run_student("JointNormalize(mean, std)", cls, IMAGENET_MEAN, IMAGENET_STD)
    result = run_student("JointNormalize(mean, std)", normalize, image.clone(), target.clone())
    expect(isinstance(result, tuple) and len(result) == 2, "JointNormalize should return a pair", "(image, target)",
           type(result).__name__, "end __call__ with `return image, target`.")
    out_img, out_tgt = result
    expect(isinstance(out_img, torch.Tensor), "JointNormalize returned an image of the wrong type", "a tensor",
           type(out_img).__name__, "it runs after JointToTensor; keep the image a tensor.")
    expect_close("JointNormalize image", F.normalize(image, list(IMAGENET_MEAN), list(IMAGENET_STD)), out_img,
                 "subtract mean[c] and divide by std[c] on channel c (torchvision's normalize does it).")
    expect(isinstance(out_tgt, torch.Tensor) and out_tgt.dtype == torch.int64 and torch.equal(out_tgt, target),
           "JointNormalize must leave the target untouched", "the same int64 class ids (255 kept)",
           f"{getattr(out_tgt, 'dtype', type(out_tgt).__name__)} values "
           f"{torch.as_tensor(out_tgt).flatten()[:4].tolist()}...",
           "normalise the image only: class ids are labels, not intensities.")
    passed("JointNormalize")


def _items(what: str, source, count: int, pairs) -> list:
    """``count`` items from a dataset, or the results of a transform applied to ``pairs``."""
    if hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        expect(len(source) > 0, f"{what} is empty", "at least one item", 0, "check the dataset's root and split.")
        return [run_student(what, source.__getitem__, i % len(source)) for i in range(count)]
    expect(callable(source), f"{what} should be a dataset or a joint transform", "Dataset or JointCompose",
           type(source).__name__, "pass the dataset (or its transforms).")
    return [run_student(what, source, *pairs[i % len(pairs)]) for i in range(count)]


def _expect_tensor_pair(what: str, item, num_classes: int) -> None:
    expect(isinstance(item, tuple) and len(item) == 2, f"{what} should give (image, target) pairs",
           "a pair", type(item).__name__, "every pipeline ends with JointToTensor (and JointNormalize).")
    image, target = item
    expect(isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.ndim == 3
           and image.shape[0] == 3, f"{what}: the image should be a float32 3×H×W tensor", "float32 3×H×W",
           f"{type(image).__name__} {getattr(image, 'dtype', '')} {tuple(getattr(image, 'shape', ()))}",
           "put JointToTensor in the pipeline.")
    expect(isinstance(target, torch.Tensor) and target.dtype == torch.int64 and target.ndim == 2,
           f"{what}: the target should be an int64 H×W tensor", "int64 H×W",
           f"{type(target).__name__} {getattr(target, 'dtype', '')} {tuple(getattr(target, 'shape', ()))}",
           "put JointToTensor in the pipeline; it keeps class ids (and 255) as int64.")
    expect(image.shape[1:] == target.shape, f"{what}: image and target sizes differ", tuple(image.shape[1:]),
           tuple(target.shape), "apply every geometric transform to both.")
    bad = sorted(set(target.unique().tolist()) - set(range(num_classes)) - {VOID})
    expect(not bad, f"{what}: the target has ids that are neither classes nor void", f"0..{num_classes - 1} and 255",
           bad, "resize targets with nearest-neighbour and pad them with 255.")
    expect(float(image.min()) < 0.0, f"{what}: the image does not look normalised", "values below 0 after "
           "(x - mean) / std", f"min {float(image.min()):.3f}", "end the pipeline with JointNormalize(mean, std).")


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def check_pipelines(sanity, train, val, num_classes: int = NUM_CLASSES) -> None:
    """Check the three pipelines (datasets, or their joint transforms).

    * sanity: one fixed item (a dataset of length 1), not augmented;
    * train: augmented (two reads of one item differ), all items one size so they batch;
    * val: not augmented (two reads agree).

    Every item must be (float32 3×H×W normalised image, int64 H×W target).
    """
    pairs = [make_pair(40, 60, 80), make_pair(41, 72, 56)]
    with _seeded(0):
        for name, source, augmented in (("sanity", sanity, False), ("train", train, True), ("val", val, False)):
            what = f"the {name} pipeline"
            first, second = _items(what, source, 2, pairs), _items(what, source, 2, pairs)
            for item in first + second:
                _expect_tensor_pair(what, item, num_classes)
            if augmented:
                differs = any(not _same(a, b) for a, b in zip(first, second)) or any(
                    not _same(_items(what, source, 1, pairs)[0], first[0]) for _ in range(4))
                expect(differs, f"{what} is not augmented", "random crops and flips", "the same item on every read",
                       "use RandomResizeCrop and RandomFlip in the training pipeline.")
                sizes = {tuple(item[0].shape) for item in first + second}
                expect(len(sizes) == 1, f"{what}: items of different sizes cannot be batched", "one size",
                       sorted(sizes), "RandomResizeCrop(..., size) gives every item the same size.")
            else:
                expect(all(_same(a, b) for a, b in zip(first, second)), f"{what} is random", "the same item "
                       "on every read", "different items", f"no random transforms in the {name} pipeline.")
        if hasattr(sanity, "__len__"):
            expect(len(sanity) == 1, "the sanity dataset should hold a single image", 1, len(sanity),
                   "pass sanity_check=<index> to VOCSegmentation.")
    passed("pipelines")
