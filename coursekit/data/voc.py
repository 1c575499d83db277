"""PASCAL VOC 2012 semantic segmentation.

Layout under a data root: ``voc/VOCdevkit/VOC2012/`` as
``VOCtrainval_11-May-2012.tar`` unpacks: ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` (palette PNGs: class index per pixel, 255 on
the void band around objects) and ``ImageSets/Segmentation/{train,val}.txt``.
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
SPEC = DatasetSpec(name="PASCAL VOC 2012", folder="voc/VOCdevkit/VOC2012",
                   required=("ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt",
                             "JPEGImages", "SegmentationClass"),
                   resources=RESOURCES, download_dir="voc")
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
        split_file = self.folder / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"{split_file} is missing; the VOC folder {self.folder} is incomplete.")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if sanity_check is not None:
            if not 0 <= sanity_check < len(self.ids):
                raise IndexError(f"sanity_check={sanity_check} is outside the {len(self.ids)} {image_set} images.")
            self.ids = [self.ids[sanity_check]]
        self.image_set, self.transforms = image_set, transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        name = self.ids[index]
        image = Image.open(self.folder / "JPEGImages" / f"{name}.jpg").convert("RGB")
        target = Image.open(self.folder / "SegmentationClass" / f"{name}.png")
        target.load()
        if target.mode != "P":
            raise ValueError(f"{name}.png has mode {target.mode}; VOC targets are palette ('P') PNGs.")
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
