"""Oxford 17 Flowers (Nilsback and Zisserman) as flower / background segmentation.

Layout under a data root: ``flowers17/`` with ``jpg/image_NNNN.jpg`` (from
``17flowers.tgz``), ``trimaps/image_NNNN.png`` (from ``trimaps.tgz``; only
some images have one) and ``datasplits.mat``. Only images with a trimap are
used. A trimap marks flower, background and an uncertain band between them;
it becomes a mask with flower 1, background 0 and the band 255 (ignored).

Trimap coding: the PNGs are palette images whose index 1 (colour
(128, 0, 0), dark red) is the flower and index 0 (black) the background, as
code that reads them does (index 1 as the flower; or RGB (128, 0, 0), grey
level 30..55). Every other value is taken as the uncertain band.

Not in the offline mirror: in the ``ci`` profile (or with
``COURSEKIT_SYNTHETIC=1``) a synthetic stand-in in the same layout is used.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .download import Resource
from .locate import DatasetSpec, locate_or_synthetic
from .matfile import read_mat
from .synthetic import write_flowers17

_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
# md5s of 17flowers.tgz and datasplits.mat as published in several dataset
# registries; no checksum of trimaps.tgz could be found, so it is checked by
# its contents (trimaps with matching photos).
RESOURCES = (Resource("17flowers.tgz", (_URL + "17flowers.tgz",), "md5:b59a65d8d1a99cd66944d474e1289eab"),
             Resource("trimaps.tgz", (_URL + "trimaps.tgz",), None),
             Resource("datasplits.mat", (_URL + "datasplits.mat",), "md5:4828cddfd0d803c5abbdebcb1e148a1e"))
FLOWER_RGB = (128, 0, 0)
IGNORE_INDEX = 255
SPLITS = {"train": "trn1", "val": "val1", "test": "tst1"}
# Fractions of the fallback split (the official splits are 680/340/340 of 1360 images).
FALLBACK_FRACTIONS = (0.5, 0.25)
# Size of the synthetic stand-in: SYNTHETIC_COUNT images of SYNTHETIC_SIZE × SYNTHETIC_SIZE.
SYNTHETIC_COUNT, SYNTHETIC_SIZE = 48, 128
_ID = re.compile(r"image_(\d{4})\.png$")

def trimap_to_mask(trimap: Image.Image) -> Image.Image:
    """A trimap (palette, grey or RGB PNG) -> PIL ``"L"`` mask: 1 flower, 0 background, 255 uncertain."""
    if trimap.mode in ("P", "L"):
        values = np.asarray(trimap)
        mask = np.where(values <= 1, values, IGNORE_INDEX).astype(np.uint8)
    else:
        rgb = np.asarray(trimap.convert("RGB"))
        mask = np.full(rgb.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        mask[(rgb == 0).all(-1)] = 0
        mask[(rgb == FLOWER_RGB).all(-1)] = 1
    return Image.fromarray(mask, mode="L")


def _labelled_ids(folder: Path) -> list[int]:
    """Sorted ids of the images that have both a photo and a trimap."""
    ids = (int(m.group(1)) for p in (folder / "trimaps").glob("image_*.png") if (m := _ID.search(p.name)))
    return sorted(i for i in ids if (folder / "jpg" / f"image_{i:04d}.jpg").is_file())


def _validate(folder: Path) -> None:
    if not _labelled_ids(folder):
        raise RuntimeError(f"{folder} holds no trimap with a matching photo; delete the archives and download again.")


SPEC = DatasetSpec(name="Oxford 17 Flowers", folder="flowers17", required=("jpg", "trimaps"),
                   resources=RESOURCES, download_dir="flowers17", validate=_validate)


def split_ids(folder: Path, split: str) -> list[int]:
    """The ids of ``split`` among the images with a trimap.

    With ``datasplits.mat``: the official split 1 (``trn1``, ``val1``,
    ``tst1``). Without it: the ids are permuted with NumPy's
    ``default_rng(0)`` and cut 50 % / 25 % / 25 % into train / val / test.
    """
    ids = _labelled_ids(folder)
    splits_file = folder / "datasplits.mat"
    if splits_file.is_file():
        official = read_mat(splits_file)
        if SPLITS[split] not in official:
            raise ValueError(f"{splits_file} has no {SPLITS[split]!r} array; delete it and download it again.")
        chosen = set(official[SPLITS[split]].astype(int).ravel().tolist())
        return [i for i in ids if i in chosen]
    order = np.random.default_rng(0).permutation(len(ids))
    n_train, n_val = (round(len(ids) * f) for f in FALLBACK_FRACTIONS)
    cut = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return [ids[i] for i in sorted(cut[split])]


def write_synthetic(root: Path) -> None:
    """Write the stand-in used when the flowers are missing: ``synthetic.write_flowers17``, seed 0."""
    write_flowers17(root, n=SYNTHETIC_COUNT, size=SYNTHETIC_SIZE, seed=0)


class Flowers17(torch.utils.data.Dataset):
    """Oxford 17 Flowers with trimap masks, torchvision-style.

    Args:
        root: a data root holding ``flowers17/``; ``None`` searches ``config.data_roots()``.
        split: ``"train"``, ``"val"`` or ``"test"`` (see ``split_ids``).
        transforms: joint transform called as ``image, target = transforms(image, target)``.
        download: fetch the three official files when missing (never in the ``ci`` profile).

    Items are ``(image, target)``: PIL RGB and PIL ``"L"`` (0 background,
    1 flower, 255 uncertain band), or whatever ``transforms`` makes of them.
    A trimap whose size differs from its photo is resized to it (nearest).
    ``.synthetic`` tells whether stand-in data is used.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", transforms=None,
                 download: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, not {split!r}.")
        self.folder, self.synthetic = locate_or_synthetic(SPEC, root, download, write_synthetic)
        self.ids, self.split, self.transforms = split_ids(self.folder, split), split, transforms

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        name = f"image_{self.ids[index]:04d}"
        image = Image.open(self.folder / "jpg" / f"{name}.jpg").convert("RGB")
        with Image.open(self.folder / "trimaps" / f"{name}.png") as trimap:
            target = trimap_to_mask(trimap)
        if target.size != image.size:
            target = target.resize(image.size, Image.NEAREST)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
