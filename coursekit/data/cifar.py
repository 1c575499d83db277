"""CIFAR-10 from the official python batches, and a fast batch loader.

Layout under a data root: ``cifar10/cifar-10-batches-py/`` with
``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``, as
``cifar-10-python.tar.gz`` unpacks. The whole split is held in memory as
uint8 N×32×32×3, so ``BatchLoader`` can augment whole batches as tensors
instead of one PIL image at a time.
"""
from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import config
from .arrays import ImageArrayDataset
from .download import Resource
from .locate import DatasetSpec, locate

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of the 50,000 official training images (RGB, in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
RESOURCES = (Resource("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                      "md5:c58f30108f718f92721af3b95e74349a"),)
SPEC = DatasetSpec(name="CIFAR-10", folder="cifar10/cifar-10-batches-py",
                   required=TRAIN_BATCHES + TEST_BATCHES + ("batches.meta",), resources=RESOURCES,
                   download_dir="cifar10")
PAD = 4


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a batch file cannot run code."""

    ALLOWED = {(f"numpy.{core}.{module}", name) for core in ("core", "_core")
               for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        if module.startswith("numpy._core.") and not hasattr(np, "_core"):
            module = "numpy.core." + module.removeprefix("numpy._core.")  # pickled by NumPy 2, read by NumPy 1
        return super().find_class(module, name)


def read_batch(path: str | os.PathLike) -> dict[str, object]:
    """One official CIFAR batch file as a dict with str keys.

    The official files are Python 2 pickles whose keys come back as bytes;
    re-pickled copies may have str keys. Both are accepted.

    Raises:
        ValueError: the file is not a readable CIFAR batch.
    """
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR batch ({exc}); delete it and fetch CIFAR-10 again.") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a CIFAR batch dict; delete it and fetch CIFAR-10 again.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _load_batches(folder: os.PathLike, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        batch = read_batch(os.path.join(folder, name))
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch["labels"]):
            raise ValueError(f"{name} in {folder} has data of shape {data.shape} and {len(batch['labels'])} labels; "
                             "expected N×3072 and N labels.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


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
