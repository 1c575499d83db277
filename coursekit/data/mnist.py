"""MNIST handwritten digits, read from the official idx gz files.

Layout under a data root: ``mnist/`` holding ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``, exactly as published. ``validate`` (run on
every load) checks each file's header against its gzip trailer; ``read_all``
and the loader decompress and check every file.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .arrays import ImageArrayDataset
from .download import Resource
from .files import DatasetFileError, read_bytes, unreadable
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
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IMAGE_MAGIC, LABEL_MAGIC = 0x803, 0x801
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10
_FIX = "delete it and fetch MNIST again (download=True), or copy it again from the mirror"


def _corrupt(path: Path, exc: Exception) -> DatasetFileError:
    """The error for an idx gz file that gzip cannot read (``exc``)."""
    return DatasetFileError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); {_FIX}.")


def _header_shape(head: bytes, path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions in an idx header: ``head`` starts with the magic number, then one big-endian uint32 each.

    Raises:
        DatasetFileError: ``head`` is too short or starts with another magic number.
    """
    size = 4 + 4 * (magic & 0xFF)
    if len(head) < size or int.from_bytes(head[:4], "big") != magic:
        found = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
        raise DatasetFileError(f"{path} is not an idx file with magic number {magic:#x} (found {found!r}); {_FIX}.")
    return struct.unpack(f">{magic & 0xFF}I", head[4:size])


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read one gzipped idx file of unsigned bytes.

    Args:
        path: an ``*-idx?-ubyte.gz`` file.
        magic: the expected magic number (``0x803`` images, ``0x801`` labels).

    Returns:
        uint8 array with the shape stored in the header (N×28×28 or N).

    Raises:
        DatasetFileError: the file is missing, truncated, not gzip, or its header does not match.
    """
    path = Path(path)
    packed = read_bytes(path, _FIX)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, exc) from None
    shape = _header_shape(raw, path, magic)
    header = 4 + 4 * len(shape)
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DatasetFileError(f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; {_FIX}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _peek_idx(path: Path, magic: int) -> tuple[int, ...]:
    """The shape in an idx gz file's header, checked against the gzip trailer without decompressing the rest.

    The trailer's last 4 bytes (ISIZE) hold the uncompressed size mod 2**32
    (of the last gzip member; the official files have one), which must be
    the header's size plus one byte per value: a truncated copy fails.

    Raises:
        DatasetFileError: the file is missing, not gzip, has another magic number, or a trailer that disagrees.
    """
    try:
        with open(path, "rb") as f:
            with gzip.GzipFile(fileobj=f) as unpacked:
                head = unpacked.read(4 + 4 * (magic & 0xFF))
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
    except FileNotFoundError as exc:
        raise unreadable(path, exc, _FIX) from None
    except (OSError, EOFError, zlib.error) as exc:  # OSError also for a file shorter than its 4-byte trailer
        raise _corrupt(path, exc) from None
    shape = _header_shape(head, path, magic)
    expected = 4 + 4 * len(shape) + math.prod(shape)
    if isize != expected % 2 ** 32:
        raise DatasetFileError(f"{path} is truncated or corrupt: its header {shape} needs {expected} bytes, its gzip "
                               f"trailer says {isize} (mod 2**32); {_FIX}.")
    return shape


def _paths(folder: Path, prefix: str) -> tuple[Path, Path]:
    """The images and labels files of the split with file prefix ``prefix`` (``train``, ``t10k``)."""
    return folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"


def _check_shapes(folder: Path, prefix: str, image_shape: tuple[int, ...], label_shape: tuple[int, ...]) -> None:
    """Raise ``DatasetFileError`` unless a split's images are N×28×28 and its labels N."""
    image_path, label_path = _paths(folder, prefix)
    if image_shape[1:] != IMAGE_SIZE:
        raise DatasetFileError(f"{image_path} holds images of {image_shape[1:]} pixels, MNIST's are 28×28; {_FIX}.")
    if image_shape[0] != label_shape[0]:
        raise DatasetFileError(f"{folder}: {image_shape[0]} images but {label_shape[0]} labels in {image_path.name} "
                               f"and {label_path.name}; the files do not belong together, fetch them again "
                               f"(download=True) or copy them again from the mirror.")


def _read_files(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images (uint8 N×28×28) and labels (uint8 N, 0..9), read and checked."""
    image_path, label_path = _paths(folder, prefix)
    images, labels = read_idx(image_path, IMAGE_MAGIC), read_idx(label_path, LABEL_MAGIC)
    _check_shapes(folder, prefix, images.shape, labels.shape)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DatasetFileError(f"{label_path} holds label {labels.max()}, not a digit 0..9; {_FIX}.")
    return images, labels


def validate(folder: Path) -> None:
    """Cheap check of an MNIST folder: each file's header and gzip trailer, and matching image and label counts.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    for prefix in SPLIT_PREFIX.values():
        image_path, label_path = _paths(folder, prefix)
        _check_shapes(folder, prefix, _peek_idx(image_path, IMAGE_MAGIC), _peek_idx(label_path, LABEL_MAGIC))


def read_all(folder: Path) -> None:
    """Thorough check of an MNIST folder: all four files decompressed and checked as the loader does.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    for prefix in SPLIT_PREFIX.values():
        _read_files(folder, prefix)


SPEC = DatasetSpec(name="MNIST", folder="mnist", required=tuple(_FILES), resources=RESOURCES,
                   download_dir="mnist", validate=validate, read_all=read_all)


def _read_split(split: str, root: str | os.PathLike | None, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """``split``'s images (uint8 N×28×28) and labels (uint8 N) from the located folder."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}.")
    return _read_files(locate(SPEC, root, download), SPLIT_PREFIX[split])


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
