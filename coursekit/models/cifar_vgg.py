"""VGG16's convolutions trained on CIFAR-10: the kit's own stand-in for ImageNet weights.

Without internet there are no ImageNet VGG16 weights, and without them
notebook 04 could not show why an FCN starts from a trained classifier. This
module trains VGG16's 13 convolutions, at a fraction of their width, as a
CIFAR-10 classifier on whatever CIFAR-10 copy the kit finds (the offline
mirror's 10,000 training images, or the official 50,000), and hands the
trained convolutions to a narrow FCN (:meth:`VGG16Convs.copy_convs_from`).
It is a much weaker start than ImageNet (32×32 images, ten classes), but a
real one: the filters have learned edges, colours and textures from images
the FCN never sees.

The classifier is ``conv1_1 … pool5`` (``conv1_1`` padded by 1, so a 32×32
image leaves a 1×1 ``pool5``), global average pooling and one linear layer.
``fc6`` and ``fc7`` have no counterpart: in the FCN they start from random
initialisation.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import config, engine
from ..data.cifar import CIFAR10, BatchLoader
from .fcn import VGG16_CONVS, VGG16Convs


class CifarVGG16(VGG16Convs):
    """VGG16's convolutions as a CIFAR-10 classifier.

    Args:
        num_classes: scores per image (10 for CIFAR-10).
        width: channel multiplier of the convolutions, in (0, 1].

    Forward: images float32 N×3×H×W (normalised) -> logits float32 N×num_classes.
    """

    def __init__(self, num_classes: int = 10, width: float = 0.125) -> None:
        super().__init__(width, first_padding=1)
        self.classifier = nn.Linear(self.channels[4], num_classes)
        self._init_he(VGG16_CONVS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images float32 N×3×H×W -> logits float32 N×num_classes."""
        _, _, pool5 = self.convs(x)                       # N×C5×1×1 for 32×32 images
        return self.classifier(pool5.mean(dim=(2, 3)))    # global average pooling, then scores


def checkpoint_path(width: float, epochs: int, train_images: int, seed: int = 0) -> Path:
    """Where :func:`pretrained` caches a network: ``config.checkpoint_dir()/cifar_vgg16_w…_e…_n…_s….pt``.

    The name holds everything the weights depend on, so a different request never reuses them.
    """
    return config.checkpoint_dir() / f"cifar_vgg16_w{width:g}_e{epochs}_n{train_images}_s{seed}.pt"


def train(train_set, test_set, width: float = 0.125, epochs: int = 10, batch_size: int = 64, lr: float = 0.05,
          seed: int = 0, device: torch.device | str | None = None) -> tuple[CifarVGG16, dict]:
    """Train a :class:`CifarVGG16` on CIFAR-10 and measure it on the test split.

    SGD with Nesterov momentum 0.9 and weight decay 5e-4 under a one-cycle
    schedule peaking at ``lr``, on shifted and flipped images
    (``BatchLoader(augment=True)``, seeded by ``seed``).

    Args:
        train_set, test_set: ``coursekit.data.cifar.CIFAR10`` splits (uint8 N×32×32×3 images).
        width: channel multiplier of the convolutions.
        epochs, batch_size, lr: the training schedule.
        seed: seeds the initialisation and the batch order.
        device: ``None`` is ``config.get_device()``.

    Returns:
        ``(model, info)``: the trained network (in eval mode, on ``device``) and
        ``{"width", "epochs", "train_images", "seed", "test_accuracy", "train_loss"}``.
    """
    device = torch.device(device) if device is not None else config.get_device()
    torch.manual_seed(seed)
    model = CifarVGG16(len(train_set.classes), width=width)
    loader = BatchLoader(train_set, batch_size, shuffle=True, augment=True,
                         generator=torch.Generator().manual_seed(seed), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    history = engine.fit(model, loader, optimizer, nn.CrossEntropyLoss(), epochs=epochs, scheduler=scheduler,
                         scheduler_interval="batch", device=device, desc=f"CIFAR-10 VGG16 (width {width:g})",
                         verbose=False)
    scores = engine.evaluate(model, BatchLoader(test_set, 500, device=device), len(train_set.classes))
    model.eval()
    return model, {"width": float(width), "epochs": int(epochs), "train_images": len(train_set), "seed": int(seed),
                   "test_accuracy": float(scores["accuracy"]), "train_loss": [float(x) for x in history.train_loss]}


def pretrained(width: float = 0.125, epochs: int = 10, train_images: int | None = None, root=None,
               cache: bool = True, device: torch.device | str | None = None) -> tuple[CifarVGG16, dict]:
    """A trained :class:`CifarVGG16`: from the checkpoint cache, or trained now and cached.

    Args:
        width, epochs: as for :func:`train`.
        train_images: how many CIFAR-10 training images (the first ones) are used; ``None``: all.
        root: CIFAR-10 location (``None``: the kit's data roots; see ``coursekit.data.cifar.CIFAR10``).
        cache: look in and write to :func:`checkpoint_path` (``False``: always train, write nothing).
        device: ``None`` is ``config.get_device()``.

    Returns:
        ``(model, info)`` as :func:`train` gives them, ``info["source"]`` being
        ``"trained"`` or ``"cache"`` and ``info["path"]`` the checkpoint's file name.

    A cached file that is unreadable or does not fit is reported in a NOTE and
    replaced (it is written atomically, and read with ``weights_only=True``).
    """
    train_set, test_set = CIFAR10(root, train=True), CIFAR10(root, train=False)
    if train_images is not None:
        train_set.data, train_set.targets = train_set.data[:train_images], train_set.targets[:train_images]
    path = checkpoint_path(width, epochs, len(train_set))
    if cache and path.exists():
        model = CifarVGG16(len(train_set.classes), width=width)
        try:
            info = engine.load_checkpoint(path, model)
        except engine.CheckpointError as exc:
            print(f"NOTE: {exc}; training it again.")
        else:
            return model.to(device or config.get_device()).eval(), {**info, "source": "cache", "path": path.name}
    model, info = train(train_set, test_set, width, epochs, device=device)
    if cache:
        engine.save_checkpoint(path, model, **info)
    return model, {**info, "source": "trained", "path": path.name}
