"""DeepLabv3 fine-tuned for flower / background segmentation (notebook 06).

Fine-tuning here means: take torchvision's DeepLabv3, trained on COCO with the
21 PASCAL VOC classes, **freeze every parameter**, and replace only its last
layer ``classifier[4]`` (a 1×1 convolution from the head's 256 channels to the
21 VOC scores) by a new ``Conv2d(256, num_classes, 1)``. Only that layer
trains. Three details make this work:

* the optimiser gets only the trainable parameters (``trainable_parameters``);
* the frozen batch-norm layers stay in **eval mode** during training, so they
  keep normalising with the running statistics learned on COCO instead of
  overwriting them with the statistics of a few flower batches
  (``FineTuneDeepLabV3.train`` calls ``frozen_batch_norm_to_eval``);
* the auxiliary head (``aux_classifier``, trained on the VOC classes) is
  removed: it is not needed and would cost time in every forward pass.

The models return torchvision's dict ``{"out": logits}`` (float32
N×num_classes×H×W for images float32 N×3×H×W); ``coursekit.engine`` takes the
logits from ``"out"``. Pretrained weights are loaded by
``coursekit.models.pretrained`` (a ``NOTE`` and random weights in the ``ci``
profile when the file is missing; a ``PretrainedWeightsUnavailable`` error
with the URL and cache path otherwise, unless ``allow_random=True``).

Public API
----------
``BACKBONES``                         the backbone names and their ``pretrained.MODELS`` keys
``CLASSES``                           the two classes: background (0) and flower (1)
``load_deeplabv3(backbone, ...)``     torchvision's DeepLabv3 with its COCO/VOC weights, and whether they loaded
``freeze(module)``                    every parameter ``requires_grad=False``
``replace_head(model, num_classes)``  a new trainable ``classifier[4]``
``frozen_batch_norm_to_eval(module)`` batch-norm layers without trainable parameters back to eval mode
``trainable_parameters(model)``       the parameters to hand to the optimiser
``set_batch_norm_statistics(model, x)`` batch-norm statistics of a random stand-in network from one batch
``count_parameters(model)``           trainable and total parameter counts
``FineTuneDeepLabV3``                 DeepLabv3 whose frozen batch norm stays in eval mode
``prepare_for_finetuning(model, k)``  freeze + new head + no aux head, as a ``FineTuneDeepLabV3``
``deeplabv3_finetune(k, ...)``        load and prepare in one call
``one_step_changes(model, ...)``      what one training step changes (parameters, batch-norm buffers)
``constant_miou(loader, label)``      the mIoU of predicting one class everywhere (a baseline)
``baselines(loader)``                 the all-background and all-flower baselines
"""
from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import torch
from torch import nn
from torchvision.models.segmentation import DeepLabV3

from .. import engine
from ..metrics import ConfusionMatrix
from . import pretrained

# Backbone name -> key of coursekit.models.pretrained.MODELS.
BACKBONES = {"mobilenet_v3_large": "deeplabv3_mobilenet_v3_large", "resnet50": "deeplabv3_resnet50",
             "resnet101": "deeplabv3_resnet101"}
CLASSES = ("background", "flower")
HEAD = 4  # index of the last layer in DeepLabHead: ASPP, 3×3 conv, batch norm, ReLU, 1×1 conv
IGNORE_INDEX = 255
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def _model_name(backbone: str) -> str:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.") from None


def load_deeplabv3(backbone: str = "mobilenet_v3_large", pretrained_weights: bool = True,
                   allow_random: bool = False) -> tuple[DeepLabV3, bool]:
    """Torchvision's DeepLabv3 with its COCO weights (21 VOC classes, auxiliary head included).

    Args:
        backbone: ``"mobilenet_v3_large"`` (default, CPU-friendly), ``"resnet50"`` or ``"resnet101"``.
        pretrained_weights: load the COCO weights; ``False`` gives torchvision's random initialisation.
        allow_random: outside the ``ci`` profile, continue from random weights (after a ``NOTE``)
            instead of raising when the weights cannot be had.

    Returns:
        ``(model, loaded)``: the model in training mode on the CPU (images float32 N×3×H×W ->
        ``{"out": float32 N×21×H×W, "aux": ...}``), and whether the pretrained weights were loaded.

    Raises:
        ValueError: unknown ``backbone``.
        PretrainedWeightsUnavailable: see ``coursekit.models.pretrained.load_weights``.
    """
    name = _model_name(backbone)
    model = pretrained.load_backbone(name, pretrained=pretrained_weights, allow_random=allow_random)
    return model, pretrained_weights and pretrained.weights_available(name)


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; returns ``module``."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def replace_head(model: DeepLabV3, num_classes: int) -> nn.Conv2d:
    """Replace ``model.classifier[4]`` by a new trainable ``Conv2d(in_channels, num_classes, 1)``.

    The input width is read from the layer replaced (256 for every torchvision DeepLabv3).
    The new layer has PyTorch's default initialisation (draws from torch's global generator).

    Returns:
        The new layer: weight float32 num_classes×256×1×1, bias float32 num_classes.
    """
    old = model.classifier[HEAD]
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"classifier[{HEAD}] of this model is a {type(old).__name__}, not the 1×1 Conv2d of "
                        "torchvision's DeepLabHead.")
    model.classifier[HEAD] = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    return model.classifier[HEAD]


def frozen_batch_norm_to_eval(module: nn.Module) -> list[str]:
    """Put every batch-norm layer of ``module`` whose parameters are all frozen into eval mode.

    In eval mode a batch-norm layer normalises with its running statistics and
    does not update them. Call it after ``module.train()``.

    Returns:
        The names of the layers put into eval mode.
    """
    frozen = []
    for name, layer in module.named_modules():
        if isinstance(layer, _BATCH_NORM) and not any(p.requires_grad for p in layer.parameters()):
            layer.eval()
            frozen.append(name)
    return frozen


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model`` with ``requires_grad=True``, in ``model.parameters()`` order.

    Hand these (and only these) to the optimiser: frozen parameters would get no
    gradient, yet Adam would still carry state for them.
    """
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


@torch.no_grad()
def set_batch_norm_statistics(model: nn.Module, images: torch.Tensor) -> list[str]:
    """Set the running statistics of every batch-norm layer of ``model`` from one batch of ``images``.

    Meant for a randomly initialised network standing in for a pretrained one (no weights offline):
    with torchvision's initial statistics (mean 0, variance 1) a random MobileNetV3's features fade
    to about 1e-10 on their way to the head, so a new last layer could learn nothing but its bias.
    Pretrained weights come with statistics of real images; this gives the random network those of
    ``images``. Nothing is trained; dropout is off during the pass; the model's mode is restored.

    Args:
        model: any network with batch-norm layers; the batch runs through ``model(images)``.
        images: float32 N×3×H×W with N ≥ 2 (normalised as for training).

    Returns:
        The names of the layers whose statistics were set.
    """
    was_training = model.training
    layers = {name: layer for name, layer in model.named_modules() if isinstance(layer, _BATCH_NORM)}
    momenta = {name: layer.momentum for name, layer in layers.items()}
    model.eval()
    for layer in layers.values():
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average: one batch sets the statistics
        layer.train()
    try:
        model(images.to(next(model.parameters()).device))
    finally:
        for name, layer in layers.items():
            layer.momentum = momenta[name]
        model.train(was_training)
    return list(layers)


class ParameterCount(NamedTuple):
    """What ``count_parameters`` returns: numbers of scalar weights (ints)."""

    trainable: int
    total: int


def count_parameters(model: nn.Module) -> ParameterCount:
    """How many scalar weights of ``model`` train, and how many there are in all."""
    return ParameterCount(sum(p.numel() for p in trainable_parameters(model)),
                          sum(p.numel() for p in model.parameters()))


class FineTuneDeepLabV3(DeepLabV3):
    """DeepLabv3 prepared for fine-tuning: frozen batch-norm layers stay in eval mode in ``train()``.

    Build it with ``prepare_for_finetuning`` or ``deeplabv3_finetune``. Maps images float32
    N×3×H×W to ``{"out": logits float32 N×num_classes×H×W}``.

    Attributes:
        pretrained: whether the frozen layers hold pretrained weights (``False``: random ones).
    """

    pretrained: bool = False

    def train(self, mode: bool = True) -> FineTuneDeepLabV3:
        super().train(mode)
        if mode:
            frozen_batch_norm_to_eval(self)
        return self


def prepare_for_finetuning(model: DeepLabV3, num_classes: int = 2, pretrained_weights: bool = False
                           ) -> FineTuneDeepLabV3:
    """``model`` made ready for fine-tuning: all frozen, a new ``classifier[4]``, no auxiliary head.

    Args:
        model: a torchvision ``DeepLabV3`` (e.g. from ``load_deeplabv3``); its layers are reused, not copied.
        num_classes: outputs of the new last layer.
        pretrained_weights: recorded as ``.pretrained`` of the result.

    Returns:
        A ``FineTuneDeepLabV3`` in training mode whose only trainable parameters are those of
        ``classifier[4]`` (weight num_classes×256×1×1, bias num_classes).
    """
    freeze(model)
    replace_head(model, num_classes)
    tuned = FineTuneDeepLabV3(model.backbone, model.classifier, aux_classifier=None)
    tuned.pretrained = pretrained_weights
    return tuned.train()


def deeplabv3_finetune(num_classes: int = 2, backbone: str = "mobilenet_v3_large", pretrained_weights: bool = True,
                       allow_random: bool = False) -> FineTuneDeepLabV3:
    """Load DeepLabv3 (``load_deeplabv3``) and prepare it for fine-tuning (``prepare_for_finetuning``).

    Returns:
        A ``FineTuneDeepLabV3``; ``.pretrained`` says whether the COCO weights were loaded.
    """
    model, loaded = load_deeplabv3(backbone, pretrained_weights, allow_random)
    return prepare_for_finetuning(model, num_classes, loaded)


class StepChanges(NamedTuple):
    """What ``one_step_changes`` found: lists of state-dict names."""

    trainable: list[str]
    parameters: list[str]
    buffers: list[str]


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [name for name, value in before.items() if not torch.equal(value, after[name])]


def one_step_changes(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], lr: float = 0.1) -> StepChanges:
    """Take one SGD step on a copy of ``model`` in training mode and report what changed.

    ``model`` itself, and torch's global random state, are left as they were.

    Args:
        model: a segmentation network (its output a logits tensor or a dict with ``"out"``).
        images: float32 N×3×H×W.
        targets: int64 N×H×W (255 = ignored).
        loss_fn: ``loss_fn(logits, targets)`` -> scalar tensor.
        lr: learning rate of the step (SGD on ``trainable_parameters``).

    Returns:
        ``StepChanges``: the names of the trainable parameters, of the parameters whose values
        changed, and of the batch-norm buffers (running mean, variance, batch count) that changed.
    """
    trial = copy.deepcopy(model)
    device = next(trial.parameters()).device
    optimizer = torch.optim.SGD(trainable_parameters(trial), lr=lr)
    parameters = {name: p.detach().clone() for name, p in trial.named_parameters()}
    buffers = {f"{name}.{key}": b.clone() for name, layer in trial.named_modules() if isinstance(layer, _BATCH_NORM)
               for key, b in layer.named_buffers(recurse=False)}
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        trial.train()
        engine.train_step(trial, images.to(device), targets.to(device), optimizer, loss_fn)
    new_buffers = {f"{name}.{key}": b for name, layer in trial.named_modules() if isinstance(layer, _BATCH_NORM)
                   for key, b in layer.named_buffers(recurse=False)}
    return StepChanges([name for name, p in trial.named_parameters() if p.requires_grad],
                       _changed(parameters, dict(trial.named_parameters())), _changed(buffers, new_buffers))


def constant_miou(loader, label: int, num_classes: int = 2, ignore_index: int | None = IGNORE_INDEX) -> float:
    """The mIoU of predicting class ``label`` at every pixel of every target of ``loader``.

    Args:
        loader: yields ``(images, targets)``; targets int64 N×H×W, ``ignore_index`` skipped.
        label: the class predicted everywhere (0 background, 1 flower).
        num_classes: classes in the mean (the mIoU is the mean of the per-class IoUs).

    Returns:
        The mIoU (float) over all counted pixels, from one ``coursekit.metrics.ConfusionMatrix``.
    """
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for _, targets in loader:
        matrix.update(torch.full_like(targets, label), targets)
    return float(matrix.compute()["miou"])


def baselines(loader) -> dict[str, float]:
    """``{"all background": mIoU, "all flower": mIoU}`` of the two constant predictions on ``loader``'s targets.

    With two classes, all background scores IoU(background) = its share of the counted
    pixels and IoU(flower) = 0, so its mIoU is half the background share (and vice versa).
    """
    return {f"all {name}": constant_miou(loader, label, len(CLASSES)) for label, name in enumerate(CLASSES)}
