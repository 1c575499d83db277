"""CIFAR-10 from the official python batches, and a fast batch loader.

Layout under a data root: ``cifar10/cifar-10-batches-py/`` with
``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``, as
``cifar-10-python.tar.gz`` unpacks. The whole split is held in memory as
uint8 N×32×32×3, so ``BatchLoader`` can augment whole batches as tensors
instead of one PIL image at a time.

The batch files are pickles, read by a restricted unpickler whose memory use
is bounded by the file's size (see ``read_batch``). ``validate`` (run on
every load) checks each file's size and last byte; ``read_all`` and the
loader unpickle every batch and check its shapes and labels.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import config
from .arrays import ImageArrayDataset
from .download import Resource
from .files import DatasetFileError, read_bytes, unreadable
from .locate import DatasetSpec, locate

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of the 50,000 official training images (RGB, in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"
RESOURCES = (Resource("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                      "md5:c58f30108f718f92721af3b95e74349a"),)
PAD = 4
IMAGE_BYTES = 3 * 32 * 32
_FIX = "delete it and fetch CIFAR-10 again (download=True), or copy it again from the mirror"
_MEMO_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}
_NDARRAY = object()  # what a pickle gets for numpy.ndarray: calling it would allocate; only _empty_array takes it


def _check_dtype(dtype: object) -> None:
    """Accept plain numeric dtypes only, checked where an array is made (a pickle can change a dtype's flags
    after ``numpy.dtype`` made it): NumPy allocates an object array by its pickled shape, and crashes on a
    damaged one.

    Raises:
        pickle.UnpicklingError: ``dtype`` is something else.
    """
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.flags:
        raise pickle.UnpicklingError(f"refusing an array of dtype {dtype!r} (flags {getattr(dtype, 'flags', None)}) "
                                     f"in a CIFAR batch file")


class _PickledArray(np.ndarray):
    """The arrays of a batch file while it is unpickled: they check the state that the pickle sets."""

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) in (4, 5) and isinstance(state[-1], bytes)):
            raise pickle.UnpicklingError("a CIFAR batch file holds an array state that is not shape, dtype, bytes")
        _check_dtype(state[-3])
        super().__setstate__(state)  # NumPy checks that the bytes match shape and dtype


def _empty_array(subtype: object, shape: object, typecode: object) -> _PickledArray:
    """``numpy.core.multiarray._reconstruct`` as NumPy's pickles call it, ``(ndarray, (0,), b"b")``: an empty
    array that the pickle's BUILD then fills. Other arguments could allocate memory the file does not hold."""
    if subtype is not _NDARRAY or shape != (0,) or typecode != b"b":
        raise pickle.UnpicklingError("a CIFAR batch file reconstructs an array in a way NumPy does not")
    return _PickledArray((0,), np.int8)


def _array_from_buffer(buf: object, dtype: object, *args) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (protocol 5 pickles): an array over bytes the file holds."""
    if not isinstance(buf, (bytes, bytearray)):
        raise pickle.UnpicklingError("a CIFAR batch file builds an array from something other than bytes")
    _check_dtype(dtype)
    return (np._core if hasattr(np, "_core") else np.core).numeric._frombuffer(buf, dtype, *args)


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """``_codecs.encode`` as Python 3 pickles of bytes call it (protocol 2): latin-1 text back to bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with {type(text).__name__} and {encoding!r}")
    return text.encode("latin1")


_STAND_INS = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes,
              **{(f"numpy.{core}.multiarray", "_reconstruct"): _empty_array for core in ("core", "_core")},
              **{(f"numpy.{core}.numeric", "_frombuffer"): _array_from_buffer for core in ("core", "_core")}}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numeric NumPy arrays only: a batch file cannot run code.

    The few globals that NumPy's pickles name (under NumPy 1's and NumPy 2's
    module names) are replaced by ``_STAND_INS``, which check their arguments
    so that every array is built from bytes the file holds.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _STAND_INS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return _STAND_INS[module, name]


def _check_opcodes(raw: bytes) -> None:
    """Reject a pickle that asks for more memory than its size justifies, before it is unpickled.

    ``pickletools.genops`` reads every length-prefixed argument (strings,
    bytes, long integers) from ``raw`` itself, so a length the file cannot
    hold fails here instead of being allocated. Memo indices must be below the
    number of opcodes (each memo entry is stored by its own opcode): the
    unpickler sizes its memo table by the largest index it sees.

    Raises:
        ValueError, pickle.UnpicklingError: (and the like) the opcodes are malformed.
    """
    count, largest = 0, -1
    for opcode, arg, _ in pickletools.genops(raw):
        count += 1
        if opcode.name in _MEMO_OPCODES:
            largest = max(largest, arg)
    if largest >= count:
        raise pickle.UnpicklingError(f"memo index {largest} in a pickle of only {count} opcodes")


def read_batch(path: str | os.PathLike) -> dict[str, object]:
    """One official CIFAR batch file as a dict with str keys.

    The official files are Python 2 pickles whose keys come back as bytes;
    re-pickled copies may have str keys. Both are accepted. Memory use is
    bounded by the file's size (see ``_check_opcodes`` and the stand-ins of
    ``_ArrayUnpickler``).

    Raises:
        DatasetFileError: the file is missing or not a readable CIFAR batch (every error of the
            unpickler, MemoryError included, becomes this one).
    """
    raw = read_bytes(path, _FIX)
    try:
        _check_opcodes(raw)
        loaded = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a damaged pickle can raise almost anything: KeyError, MemoryError, SystemError...
        raise DatasetFileError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); "
                               f"{_FIX}.") from None
    if not isinstance(loaded, dict):
        raise DatasetFileError(f"{path} does not hold a CIFAR batch dict; {_FIX}.")
    batch = {}
    for key, value in loaded.items():
        batch[key.decode("latin1") if isinstance(key, bytes) else key] = (
            value.view(np.ndarray) if isinstance(value, np.ndarray) else value)  # not the private _PickledArray
    return batch


def _labels(path: str | os.PathLike, value: object) -> np.ndarray:
    """A batch's labels (a list of ints, or a 1-D integer array) as int64 N.

    Raises:
        DatasetFileError: they are something else, or a label is not a class index 0..9.
    """
    values = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else value
    if not isinstance(values, (list, tuple)):
        raise DatasetFileError(f"{path} has no list of labels (found {type(value).__name__}); {_FIX}.")
    for i, label in enumerate(values):
        if type(label) is not int or not 0 <= label < len(CIFAR10_CLASSES):
            shown = repr(label) if type(label) is int and abs(label) < 2 ** 63 else f"a {type(label).__name__}"
            raise DatasetFileError(f"{path}: label {i} is {shown}, not a class index 0..9; {_FIX}.")
    return np.array(values, dtype=np.int64)


def load_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one batch file.

    Returns:
        ``(images, labels)``: uint8 N×32×32×3 and int64 N (class indices 0..9).

    Raises:
        DatasetFileError: the file is unreadable, its data is not a uint8 N×3072 array, or it
            does not hold N labels 0..9.
    """
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        found = f"data of shape {data.shape} ({data.dtype})" if isinstance(data, np.ndarray) else "no data array"
        raise DatasetFileError(f"{path} holds {found}; expected a uint8 N×3072 array; {_FIX}.")
    labels = _labels(path, labels)
    if len(labels) != len(data):
        raise DatasetFileError(f"{path} holds {len(data)} images but {len(labels)} labels; {_FIX}.")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_batches(folder: Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The batches ``names`` of ``folder`` in order: uint8 N×32×32×3 and int64 N."""
    images, labels = zip(*(load_batch(folder / name) for name in names))
    return np.concatenate(images), np.concatenate(labels)


def _check_pickle_end(path: Path, min_bytes: int) -> None:
    """Cheap check of one pickle file: at least ``min_bytes`` long, ending in the STOP opcode (a truncated copy
    almost never does).

    Raises:
        DatasetFileError: it is smaller, or does not end like a pickle.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - 1, 0))
            last = f.read(1)
    except OSError as exc:
        raise unreadable(path, exc, _FIX) from None
    if size < min_bytes:
        raise DatasetFileError(f"{path} holds {size} bytes, too few for a CIFAR-10 file; {_FIX}.")
    if last != pickle.STOP:
        raise DatasetFileError(f"{path} does not end like a pickle (truncated?); {_FIX}.")


def validate(folder: Path) -> None:
    """Cheap check of a CIFAR-10 folder: each batch file can hold an image and ends like a pickle.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    for name in TRAIN_BATCHES + TEST_BATCHES:
        _check_pickle_end(folder / name, IMAGE_BYTES)
    _check_pickle_end(folder / META, 1)


def read_all(folder: Path) -> None:
    """Thorough check of a CIFAR-10 folder: every batch read as the loader reads it, and the class names.

    Raises:
        DatasetFileError: naming the first file that fails.
    """
    for name in TRAIN_BATCHES + TEST_BATCHES:
        load_batch(folder / name)
    names = read_batch(folder / META).get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != len(CIFAR10_CLASSES):
        raise DatasetFileError(f"{folder / META} does not list the 10 label_names; {_FIX}.")


SPEC = DatasetSpec(name="CIFAR-10", folder="cifar10/cifar-10-batches-py",
                   required=TRAIN_BATCHES + TEST_BATCHES + (META,), resources=RESOURCES,
                   download_dir="cifar10", validate=validate, read_all=read_all)


class CIFAR10(ImageArrayDataset):
    """CIFAR-10, optionally restricted to some classes.

    Args:
        root: a data root holding ``cifar10/cifar-10-batches-py``; ``None`` searches ``config.data_roots()``.
        train: the five training batches, else the test batch.
        classes: class names to keep, e.g. ``["horse"]``; targets are re-indexed
            0..len(classes)-1 in the order given. ``None`` keeps all ten.
        transform: applied to the PIL image of an item.
        target_transform: applied to the int target of an item.
        download: fetch ``cifar-10-python.tar.gz`` when missing.

    Attributes:
        data: uint8 N×32×32×3. targets: int64 N. classes: list of the kept class names.
    """

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True,
                 classes: Sequence[str] | None = None, transform=None, target_transform=None,
                 download: bool = False) -> None:
        folder = locate(SPEC, root, download)
        data, targets = _load_batches(folder, TRAIN_BATCHES if train else TEST_BATCHES)
        self.classes = list(CIFAR10_CLASSES) if classes is None else list(classes)
        if classes is not None:
            unknown = [c for c in self.classes if c not in CIFAR10_CLASSES]
            if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes must be distinct names from {list(CIFAR10_CLASSES)}; got {self.classes}.")
            new_index = np.full(len(CIFAR10_CLASSES), -1)
            new_index[[CIFAR10_CLASSES.index(c) for c in self.classes]] = np.arange(len(self.classes))
            keep = new_index[targets] >= 0
            data, targets = data[keep], new_index[targets[keep]]
        super().__init__(np.ascontiguousarray(data), targets, transform, target_transform)


class BatchLoader:
    """Batches of a CIFAR-style dataset as normalised tensors, augmented on the whole batch.

    Works with any dataset that has ``.data`` (uint8 N×H×W×3) and ``.targets``
    (int N). The data is moved to ``device`` once; augmentation (random crop
    with 4-pixel zero padding, then a random horizontal flip) and
    normalisation with ``CIFAR10_MEAN``/``CIFAR10_STD`` run on whole batches
    there. Random numbers come from ``generator`` (a CPU ``torch.Generator``),
    so a seeded generator gives the same batches every time.

    Yields:
        ``(images, labels)``: float32 B×3×H×W and int64 B, on ``device``.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = False, augment: bool = False,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.augment, self.generator = shuffle, augment, generator
        self.device = torch.device(device) if device is not None else config.get_device()
        self._images = torch.as_tensor(np.asarray(dataset.data), dtype=torch.uint8).to(self.device)
        self._labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64).to(self.device)
        self._mean = torch.tensor(CIFAR10_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(CIFAR10_STD, device=self.device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return math.ceil(len(self._labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self._labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size].to(self.device)
            images = self._images[index].permute(0, 3, 1, 2).float().div_(255)
            if self.augment:
                images = self._augment(images)
            yield (images - self._mean) / self._std, self._labels[index]

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop with zero padding + horizontal flip: float B×3×H×W -> same shape.

        Both are one gather: each output pixel reads the padded pixel at its
        shifted (and, for flipped images, mirrored) position.
        """
        b, c, h, w = images.shape
        padded = F.pad(images, (PAD, PAD, PAD, PAD)).flatten(2)
        offsets = torch.randint(0, 2 * PAD + 1, (2, b, 1, 1), generator=self.generator).to(self.device)
        flip = (torch.rand(b, 1, generator=self.generator) < 0.5).to(self.device)
        cols = torch.arange(w, device=self.device).expand(b, w)
        cols = torch.where(flip, cols.flip(-1), cols)[:, None, :] + offsets[1]
        rows = torch.arange(h, device=self.device)[None, :, None] + offsets[0]
        source = (rows * (w + 2 * PAD) + cols).view(b, 1, h * w).expand(b, c, h * w)
        return padded.gather(2, source).view(b, c, h, w)
