"""The CMP Facade Database (Tyleček and Šára, GCPR 2013): rectified facades, 12 classes.

Layout under a data root: ``cmp_facade/base/`` (378 ``cmp_bNNNN.jpg`` photos
with ``.png`` label maps and ``.xml`` object lists) and, optionally,
``cmp_facade/extended/`` (228 ``cmp_xNNNN`` files), as
``CMP_facade_DB_base.zip`` and ``CMP_facade_DB_extended.zip`` unpack. Label
maps store 1..12 per pixel; the loader maps them to 0..11 (``FACADE_CLASSES``).

The authors publish no checksums for the two zips (none could be found in
the project page, papers or code that uses them), so their checksum is
``None`` and a download is checked by its contents instead: the expected
number of photo/label pairs.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import viz
from .download import Resource
from .files import DatasetFileError, open_image
from .locate import DatasetSpec, IncompleteDatasetError, find, locate

# Label 1..12 of the DB in order (the .xml files name labels 2..12; 1 is the background).
FACADE_CLASSES = ("background", "facade", "window", "door", "cornice", "sill", "balcony", "blind", "deco",
                  "molding", "pillar", "shop")
# The colours of labels 1..12 in the DB's own palette PNGs.
FACADE_PALETTE = np.array([(0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
                           (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0)],
                          dtype=np.uint8)
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")
# The course handout splits the 606 images of base + extended into 500 / 30 / 76.
HANDOUT_SPLIT = (500, 30, 76)
_URL = "https://cmp.felk.cvut.cz/~tylecr1/facade/"


# Photo/label pairs of each official archive, by file prefix: a copy with fewer is incomplete.
EXPECTED_PAIRS = {"cmp_b": 378, "cmp_x": 228}


def _pairs(folder: Path, prefix: str) -> list[Path]:
    """The sorted ``<prefix>NNNN.jpg`` photos of ``folder``; each must have its ``.png`` label map.

    Raises:
        IncompleteDatasetError: a photo has no label map.
    """
    photos = sorted(folder.glob(f"{prefix}*.jpg"))
    unlabelled = [p.name for p in photos if not p.with_suffix(".png").is_file()]
    if unlabelled:
        raise IncompleteDatasetError(f"{len(unlabelled)} photos in {folder} have no .png label map "
                                     f"(e.g. {unlabelled[0]}): the copy is incomplete; fetch or copy the CMP "
                                     f"Facade DB again.")
    return photos


def _expect_pairs(prefix: str):
    """A ``DatasetSpec.validate`` for one archive: its folder holds ``EXPECTED_PAIRS[prefix]`` photo/label pairs."""
    def validate(folder: Path) -> None:
        found, count = len(_pairs(folder, prefix)), EXPECTED_PAIRS[prefix]
        if found != count:
            raise IncompleteDatasetError(f"{folder} holds {found} {prefix}NNNN photo/label pairs, the official "
                                         f"archive {count}: the copy is incomplete (or not the official one); "
                                         f"delete it and fetch or copy the CMP Facade DB again.")
    return validate


_FIX = "delete it and fetch or copy the CMP Facade DB again"


def read_pair(photo: Path) -> tuple[Image.Image, Image.Image]:
    """The photo ``cmp_xNNNN.jpg`` and its label map ``.png``, as stored.

    Returns:
        ``(image, labels)``: PIL RGB, and PIL ``"P"``/``"L"`` of the same size with values 1..12.

    Raises:
        DatasetFileError: either file is missing or unreadable, the label map is not a palette or
            grey image, or its size differs from the photo's.
    """
    image = open_image(photo, "JPEG", _FIX).convert("RGB")
    path = photo.with_suffix(".png")
    labels = open_image(path, "PNG", _FIX)
    if labels.mode not in ("P", "L"):
        raise DatasetFileError(f"{path} has mode {labels.mode}, not a palette label map; {_FIX}.")
    if labels.size != image.size:
        raise DatasetFileError(f"{path} is {labels.size[0]}×{labels.size[1]} but its photo {photo.name} is "
                               f"{image.size[0]}×{image.size[1]}; {_FIX}.")
    return image, labels


def _read_all(prefix: str):
    """A ``DatasetSpec.read_all``: every photo/label pair of the folder opens as ``read_pair`` reads it."""
    def read_all(folder: Path) -> None:
        for photo in _pairs(folder, prefix):
            read_pair(photo)
    return read_all


BASE_SPEC = DatasetSpec(name="CMP Facade DB (base)", folder="cmp_facade/base",
                        required=("cmp_b0001.jpg", "cmp_b0001.png"),
                        resources=(Resource("CMP_facade_DB_base.zip", (_URL + "CMP_facade_DB_base.zip",), None),),
                        download_dir="cmp_facade", validate=_expect_pairs("cmp_b"), read_all=_read_all("cmp_b"))
EXTENDED_SPEC = DatasetSpec(name="CMP Facade DB (extended)", folder="cmp_facade/extended",
                            required=("cmp_x0001.jpg", "cmp_x0001.png"),
                            resources=(Resource("CMP_facade_DB_extended.zip", (_URL + "CMP_facade_DB_extended.zip",),
                                                None),),
                            download_dir="cmp_facade", validate=_expect_pairs("cmp_x"), read_all=_read_all("cmp_x"))


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train / val / test sizes for ``n`` images: the handout's 500/30/76 scaled to ``n``.

    For the full DB (606 images) this is exactly 500/30/76; for the base set
    alone (378) it is 312/19/47.
    """
    total = sum(HANDOUT_SPLIT)
    n_train, n_val = round(n * HANDOUT_SPLIT[0] / total), round(n * HANDOUT_SPLIT[1] / total)
    return n_train, n_val, n - n_train - n_val


def revert_input(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo normalisation for display.

    Args:
        image: float 3×H×W or N×3×H×W, normalised as ``(x - mean) / std``.
        mean, std: the per-channel values used to normalise.

    Returns:
        float32 H×W×3 (or N×H×W×3) in [0, 1], ready for ``plt.imshow``.
    """
    return viz.denormalize(torch.as_tensor(image).detach().float().cpu(), mean, std).movedim(-3, -1).numpy()


def _optional_extended(root: str | os.PathLike | None) -> Path | None:
    """Fetch the optional extended set; on failure print a ``NOTE:`` and return ``None``."""
    try:
        return locate(EXTENDED_SPEC, root, download=True)
    except RuntimeError as exc:  # DatasetNotFoundError, ChecksumError, IncompleteDatasetError, a corrupt zip
        reason = str(exc).splitlines()[0]
        print(f"NOTE: the optional CMP Facade extended set could not be fetched ({reason}); "
              f"using the base set alone.")
        return None


def _label_lookup() -> list[int]:
    """Label map value -> class index: 1..12 -> 0..11, anything else -> 255."""
    lut = [IGNORE_INDEX] * 256
    lut[1:len(FACADE_CLASSES) + 1] = range(len(FACADE_CLASSES))
    return lut


class CMPFacade(torch.utils.data.Dataset):
    """The CMP Facade DB for semantic segmentation.

    Args:
        root: a data root holding ``cmp_facade/base`` (and maybe ``cmp_facade/extended``);
            ``None`` searches ``config.data_roots()``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transforms: joint transform called as ``image, target = transforms(image, target)``.
        download: fetch the base and extended zips when the base set is missing. When the
            base set is present nothing is downloaded, and the extended set is used only if
            it is present too. The extended set is optional: when it cannot be fetched, a
            ``NOTE:`` says why and the base set is used alone.

    Split: the photos are listed in sorted order, base set first, then the
    extended set, and cut in that order into ``split_sizes(n)``: the handout's
    500/30/76 when both sets are present, 312/19/47 for the base set alone
    (as in the offline mirror).

    Items are ``(image, target)``: PIL RGB and PIL ``"P"`` with class indices
    0..11 (label map values 1..12 shifted down; any other value becomes 255,
    ignored), or whatever ``transforms`` makes of them.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", transforms=None,
                 download: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}.")
        base_missing = find(BASE_SPEC, root) is None
        folders = [locate(BASE_SPEC, root, download)]
        extended = find(EXTENDED_SPEC, root)
        if extended is None and base_missing and download:
            extended = _optional_extended(root)
        if extended is not None:
            folders.append(extended)
        photos = _pairs(folders[0], "cmp_b") + (_pairs(folders[1], "cmp_x") if extended is not None else [])
        n_train, n_val, _ = split_sizes(len(photos))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(photos))}
        start, stop = bounds[split]
        self.photos, self.folders, self.split, self.transforms = photos[start:stop], folders, split, transforms
        self._lut = _label_lookup()

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int):
        image, labels = read_pair(self.photos[index])
        target = labels.point(self._lut)
        target.putpalette(FACADE_PALETTE.tobytes())
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
