"""A torch Dataset over images held in memory as one uint8 array."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageArrayDataset(torch.utils.data.Dataset):
    """Items ``(PIL image, int target)`` from ``data`` (uint8 N×H×W or N×H×W×3) and ``targets`` (int N).

    Subclasses fill ``data`` and ``targets``; ``transform`` is applied to
    the PIL image of an item and ``target_transform`` to its int target,
    as in torchvision.
    """

    def __init__(self, data: np.ndarray, targets: np.ndarray, transform=None, target_transform=None) -> None:
        if len(data) != len(targets):
            raise ValueError(f"{len(data)} images but {len(targets)} targets.")
        self.data, self.targets = data, np.asarray(targets, dtype=np.int64)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, target = Image.fromarray(self.data[index]), int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
