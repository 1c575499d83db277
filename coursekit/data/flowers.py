"""Oxford 17 Flowers (Nilsback and Zisserman) as flower / background segmentation.

Layout under a data root: ``flowers17/`` with ``jpg/image_NNNN.jpg`` (from
``17flowers.tgz``), ``trimaps/image_NNNN.png`` (from ``trimaps.tgz``; only
some images have one) and ``datasplits.mat``. Only images with a trimap are
used. A trimap marks flower, background and an uncertain band between them;
it becomes a mask with flower 1, background 0 and the band 255 (ignored).

Trimap coding: the PNGs are palette images whose index 1 (colour
(128, 0, 0), dark red) is the flower and index 0 (black) the background, as
code that reads them does (index 1 as the flower; or RGB (128, 0, 0), grey
level 30..55). Every other value is taken as the uncertain band. A trimap
that marks no flower at all does not fit this coding and is an error.
``validate`` (run on every load) checks that there are photos with trimaps
and that each split holds some; ``read_all`` and the loader check every
photo and trimap as they read it.

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
from .files import DatasetFileError, open_image
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
MAX_ID = 9999  # ids are the NNNN of image_NNNN
_FIX = "delete it and fetch the Oxford 17 Flowers files again (download=True)"
_FIX_FOLDER = "delete the folder and fetch the Oxford 17 Flowers files again (download=True)"


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


def _official_ids(official: dict[str, np.ndarray], splits_file: Path, key: str) -> set[int]:
    """The image ids of split ``key`` (e.g. ``"trn1"``) among the arrays ``official`` of ``splits_file``.

    Raises:
        DatasetFileError: there is no ``key`` array, or it holds something other than ids 1..9999.
    """
    if key not in official:
        raise DatasetFileError(f"{splits_file} has no {key!r} array; {_FIX}.")
    values = official[key].astype(np.float64).ravel()
    if not ((values == np.round(values)) & (values >= 1) & (values <= MAX_ID)).all():
        raise DatasetFileError(f"{splits_file} holds values in {key!r} that are not image ids 1..{MAX_ID}; {_FIX}.")
    return set(values.astype(np.int64).tolist())


def _splits(folder: Path) -> dict[str, list[int]]:
    """The ids of every split (see ``split_ids``).

    Raises:
        DatasetFileError: no image has a trimap, ``datasplits.mat`` is unreadable or lacks a
            split, or a split holds no image with a trimap.
    """
    ids = _labelled_ids(folder)
    if not ids:
        raise DatasetFileError(f"{folder} holds no trimap with a matching photo; {_FIX_FOLDER}.")
    splits_file = folder / "datasplits.mat"
    if splits_file.is_file():
        official = read_mat(splits_file)
        chosen = {split: _official_ids(official, splits_file, key) for split, key in SPLITS.items()}
        splits = {split: [i for i in ids if i in chosen[split]] for split in SPLITS}
        source = str(splits_file)
    else:
        order = np.random.default_rng(0).permutation(len(ids))
        n_train, n_val = (round(len(ids) * f) for f in FALLBACK_FRACTIONS)
        cut = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        splits = {split: [ids[i] for i in sorted(cut[split])] for split in SPLITS}
        source = f"a 50/25/25 % split of its {len(ids)} images, as there is no datasplits.mat"
    for split, chosen_ids in splits.items():
        if not chosen_ids:
            raise DatasetFileError(f"the {split!r} split of {folder} ({source}) holds no image with a trimap and a "
                                   f"photo; {_FIX_FOLDER}.")
    return splits


def split_ids(folder: Path, split: str) -> list[int]:
    """The ids of ``split`` among the images with a trimap.

    With ``datasplits.mat``: the official split 1 (``trn1``, ``val1``,
    ``tst1``). Without it: the ids are permuted with NumPy's
    ``default_rng(0)`` and cut 50 % / 25 % / 25 % into train / val / test.

    Raises:
        DatasetFileError: the folder fails ``validate``.
    """
    return _splits(folder)[split]


def read_pair(folder: Path, image_id: int) -> tuple[Image.Image, Image.Image]:
    """The photo and mask of ``image_NNNN``, checked.

    Returns:
        ``(image, target)``: PIL RGB and PIL ``"L"`` of the same size (0 background, 1 flower,
        255 uncertain band); a trimap of another size is resized to the photo (nearest).

    Raises:
        DatasetFileError: either file is missing or unreadable, or the trimap marks no flower.
    """
    name = f"image_{image_id:04d}"
    image = open_image(folder / "jpg" / f"{name}.jpg", "JPEG", _FIX).convert("RGB")
    path = folder / "trimaps" / f"{name}.png"
    target = trimap_to_mask(open_image(path, "PNG", _FIX))
    if not (np.asarray(target) == 1).any():
        raise DatasetFileError(f"{path} marks no flower (palette index 1 or RGB {FLOWER_RGB}); {_FIX}.")
    if target.size != image.size:
        target = target.resize(image.size, Image.NEAREST)
    return image, target


def validate(folder: Path) -> None:
    """Cheap check of a flowers folder: photos with trimaps, and every split non-empty (reads ``datasplits.mat``).

    Raises:
        DatasetFileError: naming the folder or file at fault.
    """
    _splits(folder)


def read_all(folder: Path) -> None:
    """Thorough check of a flowers folder: ``validate``, then every photo with a trimap read as the loader does.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    validate(folder)
    for image_id in _labelled_ids(folder):
        read_pair(folder, image_id)


SPEC = DatasetSpec(name="Oxford 17 Flowers", folder="flowers17", required=("jpg", "trimaps"),
                   resources=RESOURCES, download_dir="flowers17", validate=validate, read_all=read_all)


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
        image, target = read_pair(self.folder, self.ids[index])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
