"""MNIST handwritten digits, read from the official idx gz files.

Layout under a data root: ``mnist/`` holding ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``, exactly as published.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .arrays import ImageArrayDataset
from .download import Resource
from .locate import DatasetSpec, locate

_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# The official files and their md5s, as torchvision lists them.
_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
RESOURCES = tuple(Resource(name, tuple(m + name for m in _MIRRORS), f"md5:{md5}") for name, md5 in _FILES.items())
SPEC = DatasetSpec(name="MNIST", folder="mnist", required=tuple(_FILES), resources=RESOURCES,
                   download_dir="mnist")
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IMAGE_MAGIC, LABEL_MAGIC = 0x803, 0x801


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one gzipped idx file of unsigned bytes.

    Args:
        path: an ``*-idx?-ubyte.gz`` file.
        magic: the expected magic number (``0x803`` images, ``0x801`` labels).

    Returns:
        uint8 array with the shape stored in the header (N×28×28 or N).

    Raises:
        ValueError: the file is truncated, not gzip, or its header does not match.
    """
    path = Path(path)
    hint = "delete it and load again with download=True (or copy it again)"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is corrupt or truncated ({exc}); {hint}.") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise ValueError(f"{path} is not an idx file with magic number {magic:#x} (found {found!r}); {hint}.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; {hint}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_split(split: str, root: str | os.PathLike | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
    folder = locate(SPEC, root, download)
    prefix = SPLIT_PREFIX[split]
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", IMAGE_MAGIC)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", LABEL_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"MNIST {split}: {len(images)} images but {len(labels)} labels in {folder}; "
                         "the files do not belong together, fetch them again.")
    return images, labels


def load_mnist(split: str = "train", root: str | os.PathLike | None = None,
               download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as flat arrays, for the from-scratch NumPy network.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a data root holding ``mnist/``; ``None`` searches ``config.data_roots()``.
        download: fetch the official files when missing.

    Returns:
        ``(images, labels)``: float32 N×784 in [0, 1] and int64 N.
    """
    images, labels = _read_split(split, root, download)
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels.astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """One-hot rows: int labels N (values in [0, K)) -> float32 N×K."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} and dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}.")
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


class MNIST(ImageArrayDataset):
    """MNIST as a torch Dataset, torchvision-style.

    Items are ``(image, label)``: a PIL ``"L"`` image 28×28 (after
    ``transform``) and an int (after ``target_transform``). ``.data`` is
    uint8 N×28×28 and ``.targets`` int64 N.
    """

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True, transform=None,
                 target_transform=None, download: bool = False) -> None:
        images, labels = _read_split("train" if train else "test", root, download)
        super().__init__(images, labels, transform, target_transform)
