"""PASCAL VOC 2012 semantic segmentation.

Layout under a data root: ``voc/VOCdevkit/VOC2012/`` as
``VOCtrainval_11-May-2012.tar`` unpacks: ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` (palette PNGs: class index per pixel, 255 on
the void band around objects) and ``ImageSets/Segmentation/{train,val,trainval}.txt``.
``validate`` (run on every load) checks that the listed files are there;
``read_all`` and the loader check each photo and class map as they read it.
Not in the offline mirror: in the ``ci`` profile (or with
``COURSEKIT_SYNTHETIC=1``) a synthetic stand-in in the same layout is used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .download import Resource
from .files import DatasetFileError, open_image, read_bytes, unreadable
from .locate import DatasetSpec, locate_or_synthetic

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
IGNORE_INDEX = 255
IMAGE_SETS = ("train", "val", "trainval")
_TAR = "VOCtrainval_11-May-2012.tar"
RESOURCES = (Resource(_TAR, (f"http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{_TAR}",
                             f"https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/{_TAR}"),
                      "md5:6cd6e144f989b92b3379bac3b3de84fd"),)
_FIX = (f"delete its VOC2012 folder and load again: {_TAR} is unpacked anew (download=True fetches it), "
        f"or the synthetic stand-in written anew")
# Size of the synthetic stand-in (images are SYNTHETIC_SIZE × SYNTHETIC_SIZE).
SYNTHETIC_TRAIN, SYNTHETIC_VAL, SYNTHETIC_SIZE = 64, 24, 128


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map: uint8 n×3; colour i spreads the bits of i over R, G, B from the top bit down."""
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            palette[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
    return palette


VOC_PALETTE = voc_palette()


def _split_file(folder: Path, image_set: str) -> Path:
    """The list file of ``image_set`` in a VOC2012 folder."""
    return folder / "ImageSets" / "Segmentation" / f"{image_set}.txt"


def read_ids(split_file: Path) -> list[str]:
    """The image ids listed in an ``ImageSets/Segmentation/*.txt`` file, in file order.

    Raises:
        DatasetFileError: the file is missing, unreadable, not text or lists no id.
    """
    try:
        text = read_bytes(split_file, _FIX).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetFileError(f"{split_file} is not a text list of image ids ({exc}); {_FIX}.") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DatasetFileError(f"{split_file} lists no image; {_FIX}.")
    return ids


def read_pair(folder: Path, name: str) -> tuple[Image.Image, Image.Image]:
    """The photo and class map of image ``name``, checked.

    Returns:
        ``(image, target)``: PIL RGB and PIL ``"P"`` of the same size, with
        class indices 0..20 and 255 (void).

    Raises:
        DatasetFileError: either file is missing or unreadable, the class map is not a palette
            PNG, has another size than the photo or holds other values.
    """
    photo = folder / "JPEGImages" / f"{name}.jpg"
    image = open_image(photo, "JPEG", _FIX).convert("RGB")
    path = folder / "SegmentationClass" / f"{name}.png"
    target = open_image(path, "PNG", _FIX)
    if target.mode != "P":
        raise DatasetFileError(f"{path} has mode {target.mode}; VOC targets are palette ('P') PNGs; {_FIX}.")
    if target.size != image.size:
        raise DatasetFileError(f"{path} is {target.width}×{target.height} but its photo {photo} is "
                               f"{image.width}×{image.height}; {_FIX}.")
    counts = np.bincount(np.asarray(target).ravel(), minlength=256)
    unknown = np.flatnonzero(counts[len(VOC_CLASSES):IGNORE_INDEX]) + len(VOC_CLASSES)
    if unknown.size:
        raise DatasetFileError(f"{path} holds values {unknown[:5].tolist()}, not class indices 0..20 or 255 (void); "
                               f"{_FIX}.")
    return image, target


def _listing(folder: Path) -> set[str]:
    """The file names in ``folder``.

    Raises:
        DatasetFileError: it cannot be listed.
    """
    try:
        return set(os.listdir(folder))
    except OSError as exc:
        raise unreadable(folder, exc, _FIX) from None


def validate(folder: Path) -> None:
    """Cheap check of a VOC folder: every list file names images whose photo and class map are there.

    Only the list files are read; the image folders are listed, not opened.

    Raises:
        DatasetFileError: naming a list file that is missing or empty, or the first missing image file.
    """
    present = {sub: _listing(folder / sub) for sub in ("JPEGImages", "SegmentationClass")}
    for image_set in IMAGE_SETS:
        split_file = _split_file(folder, image_set)
        missing = [folder / sub / f"{name}{suffix}" for name in read_ids(split_file)
                   for sub, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png"))
                   if f"{name}{suffix}" not in present[sub]]
        if missing:
            raise DatasetFileError(f"{len(missing)} files listed in {split_file} are missing, e.g. {missing[0]}; "
                                   f"{_FIX}.")


def read_all(folder: Path) -> None:
    """Thorough check of a VOC folder: ``validate``, then every listed photo and class map read as the loader does.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    validate(folder)
    names = dict.fromkeys(name for image_set in IMAGE_SETS for name in read_ids(_split_file(folder, image_set)))
    for name in names:
        read_pair(folder, name)


SPEC = DatasetSpec(name="PASCAL VOC 2012", folder="voc/VOCdevkit/VOC2012",
                   required=("ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt",
                             "JPEGImages", "SegmentationClass"),
                   resources=RESOURCES, download_dir="voc", validate=validate, read_all=read_all)


def write_synthetic(root: Path) -> None:
    """Write the stand-in used when VOC is missing: ``synthetic.write_voc`` with this module's sizes, seed 0."""
    from .synthetic import write_voc  # imported here: synthetic imports this module for the palette

    write_voc(root, n_train=SYNTHETIC_TRAIN, n_val=SYNTHETIC_VAL, size=SYNTHETIC_SIZE, seed=0)


class VOCSegmentation(torch.utils.data.Dataset):
    """PASCAL VOC 2012 segmentation, torchvision-style.

    Args:
        root: a data root holding ``voc/VOCdevkit/VOC2012``; ``None`` searches ``config.data_roots()``.
        image_set: ``"train"``, ``"val"`` or ``"trainval"``.
        transforms: joint transform called as ``image, target = transforms(image, target)``.
        sanity_check: an index ``i``: the dataset holds only the i-th image of the split
            (for overfitting one image).
        download: fetch the 2 GB trainval tar when missing (never in the ``ci`` profile).

    Items are ``(image, target)``: PIL RGB and PIL ``"P"`` (class index per
    pixel, 255 = void), or whatever ``transforms`` makes of them.
    ``.synthetic`` tells whether stand-in data is used.
    """

    def __init__(self, root: str | os.PathLike | None = None, image_set: str = "train", transforms=None,
                 sanity_check: int | None = None, download: bool = False) -> None:
        if image_set not in IMAGE_SETS:
            raise ValueError(f"image_set must be one of {IMAGE_SETS}, not {image_set!r}.")
        self.folder, self.synthetic = locate_or_synthetic(SPEC, root, download, write_synthetic)
        self.ids = read_ids(_split_file(self.folder, image_set))
        if sanity_check is not None:
            if not 0 <= sanity_check < len(self.ids):
                raise IndexError(f"sanity_check={sanity_check} is outside the {len(self.ids)} {image_set} images.")
            self.ids = [self.ids[sanity_check]]
        self.image_set, self.transforms = image_set, transforms

    def __len__(self) -> int:
        return len(self.ids)

    def padded_side(self, count: int | None = None, cap: int | None = None, multiple: int = 32) -> int:
        """The side a batch of this split's first ``count`` images (``None``: all) must be padded to so that every
        one fits whole: the longest side among them rounded up to ``multiple`` (the network's stride), at most
        ``cap``. Real VOC photos are at most 500 pixels (so 512); the synthetic stand-in's are 128.

        Raises:
            DatasetFileError: a photo is missing or unreadable.
        """
        names = self.ids if count is None else self.ids[:count]
        if not names:
            raise ValueError(f"padded_side needs at least one image; count={count}.")
        longest = max(max(open_image(self.folder / "JPEGImages" / f"{name}.jpg", "JPEG", _FIX).size) for name in names)
        side = -(-longest // multiple) * multiple
        return side if cap is None else min(side, cap)

    def __getitem__(self, index: int):
        image, target = read_pair(self.folder, self.ids[index])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
