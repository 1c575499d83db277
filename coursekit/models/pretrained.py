"""Pretrained torchvision models, loaded safely and offline-aware.

Weights come from torchvision's weight enums (``VGG16_Weights.IMAGENET1K_V1``,
``ResNet18_Weights.DEFAULT``, ...) and live in the torch hub cache,
``$TORCH_HOME/hub/checkpoints`` (by default ``~/.cache/torch/hub/checkpoints``),
so a file fetched once by any torchvision program is reused here.

What happens when a file is not in the cache depends on the profile
(:func:`coursekit.config.profile_name`):

``ci``
    No network attempt: print a plain ``NOTE`` and continue from random
    initialisation, so a notebook still runs (with lower numbers).
``cpu`` / ``full``
    Try the download (with a socket timeout, so it cannot hang). If that
    fails, raise :class:`PretrainedWeightsUnavailable` saying where to put
    the file, unless the caller passed ``allow_random=True``.

Files are always read with ``torch.load(..., weights_only=True)``.

Public API
----------
``MODELS``                       the architectures known by name (``vgg16``, ``resnet18`` ...)
``weights_for(name)``            the weight enum member of a name
``cached_weights_path(weights)`` where the hub cache keeps that file
``weights_available(weights)``   whether the file is already cached (never touches the network)
``load_weights(weights, ...)``   the state dict, or ``None`` when falling back to random
``load_backbone(name, ...)``     a torchvision model with the pretrained weights
``pretrained_classifier(name)``  model + preprocessing + category names, for ImageNet predictions
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import urlparse

import torch
import torch.hub
from torch import nn
from torchvision import models
from torchvision.models import segmentation

from .. import config

DOWNLOAD_TIMEOUT_S = 20.0


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable, and random initialisation was not allowed."""


@dataclass(frozen=True)
class ModelSpec:
    """One loadable architecture.

    Attributes:
        title: the name shown in messages, e.g. ``"VGG16"``.
        builder: the torchvision constructor, e.g. ``torchvision.models.vgg16``.
        weights: the weight enum member loaded for ``pretrained=True``.
        task: ``"classification"`` (ImageNet, 1000 classes) or ``"segmentation"``.
        build_kwargs: extra constructor arguments that give the architecture
            the weights expect (output classes, auxiliary head) without
            making the constructor fetch anything itself.
    """

    title: str
    builder: Callable[..., nn.Module]
    weights: models.WeightsEnum
    task: str = "classification"
    build_kwargs: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    "vgg16": ModelSpec("VGG16", models.vgg16, models.VGG16_Weights.IMAGENET1K_V1),
    "resnet18": ModelSpec("ResNet-18", models.resnet18, models.ResNet18_Weights.DEFAULT),
    "resnet34": ModelSpec("ResNet-34", models.resnet34, models.ResNet34_Weights.DEFAULT),
    "resnet50": ModelSpec("ResNet-50", models.resnet50, models.ResNet50_Weights.DEFAULT),
    "deeplabv3_resnet50": ModelSpec(
        "DeepLabV3-ResNet-50", segmentation.deeplabv3_resnet50, segmentation.DeepLabV3_ResNet50_Weights.DEFAULT,
        "segmentation", {"aux_loss": True, "weights_backbone": None}),
    "deeplabv3_resnet101": ModelSpec(
        "DeepLabV3-ResNet-101", segmentation.deeplabv3_resnet101, segmentation.DeepLabV3_ResNet101_Weights.DEFAULT,
        "segmentation", {"aux_loss": True, "weights_backbone": None}),
    "deeplabv3_mobilenet_v3_large": ModelSpec(
        "DeepLabV3-MobileNetV3-Large", segmentation.deeplabv3_mobilenet_v3_large,
        segmentation.DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT,
        "segmentation", {"aux_loss": True, "weights_backbone": None}),
}


class PretrainedClassifier(NamedTuple):
    """What :func:`pretrained_classifier` returns.

    Attributes:
        model: the network in eval mode; maps float32 N×3×224×224 to logits float32 N×1000.
        transforms: the preprocessing the weights were trained with; takes a PIL image or a
            uint8/float tensor 3×H×W and returns float32 3×224×224, normalised.
        categories: the 1000 ImageNet class names, indexed like the logits.
        pretrained: ``True`` when the ImageNet weights were loaded, ``False`` when the model
            is randomly initialised (offline fallback); its predictions are then meaningless.
    """

    model: nn.Module
    transforms: Callable[[Any], torch.Tensor]
    categories: list[str]
    pretrained: bool


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}.") from None


def _title(weights: models.WeightsEnum) -> str:
    for spec in MODELS.values():
        if spec.weights == weights:
            return spec.title
    return type(weights).__name__.removesuffix("_Weights")


def weights_for(name: str) -> models.WeightsEnum:
    """The weight enum member that ``load_backbone(name)`` loads, e.g. ``VGG16_Weights.IMAGENET1K_V1``."""
    return _spec(name).weights


def cached_weights_path(weights: models.WeightsEnum) -> Path:
    """Where the torch hub cache keeps the file of ``weights``.

    ``$TORCH_HOME/hub/checkpoints/<file name of weights.url>``; read at call
    time, so a changed ``TORCH_HOME`` is honoured.
    """
    filename = os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def weights_available(weights: models.WeightsEnum | str) -> bool:
    """Whether the file of ``weights`` (an enum member or a name in ``MODELS``) is cached.

    Looks at the disk only; never touches the network.
    """
    if isinstance(weights, str):
        weights = weights_for(weights)
    return cached_weights_path(weights).is_file()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every socket operation (connect, each read) so a download cannot hang."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(weights: models.WeightsEnum, target: Path, timeout: float) -> None:
    """Fetch ``weights.url`` into ``target`` via the torch hub, checking the hash in its file name."""
    match = re.search(r"-([a-f0-9]{6,})\.", target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _socket_timeout(timeout):
        torch.hub.download_url_to_file(weights.url, str(target), hash_prefix=match.group(1) if match else None)


def _unavailable(weights: models.WeightsEnum, reason: str) -> PretrainedWeightsUnavailable:
    return PretrainedWeightsUnavailable(
        f"pretrained {_title(weights)} weights ({weights}) are not available ({reason}).\n"
        f"  Download {weights.url}\n"
        f"  and put it at {cached_weights_path(weights)} (the torch hub cache; set TORCH_HOME to move it),\n"
        "  or pass allow_random=True to continue from random initialisation.")


RANDOM_START = "continuing from random initialisation, so results will be lower than the handout's"


def _in_words(folder: Path) -> str:
    """``folder`` for a printed note: under the home folder as ``~/...``, else as it is (no user name)."""
    try:
        return f"~/{folder.relative_to(Path.home()).as_posix()}"
    except ValueError:
        return folder.as_posix()


def _fallback_note(weights: models.WeightsEnum, consequence: str | None) -> None:
    """Print the NOTE that ``weights`` cannot be had, naming the file and the cache folder, then ``consequence``."""
    path = cached_weights_path(weights)
    print(f"NOTE: pretrained {_title(weights)} weights are not available offline ({path.name} is not in the "
          f"torch hub cache, {_in_words(path.parent)})" + (f"; {consequence}." if consequence else "."))


def load_weights(weights: models.WeightsEnum, allow_random: bool = False,
                 timeout: float = DOWNLOAD_TIMEOUT_S,
                 consequence: str | None = RANDOM_START) -> dict[str, torch.Tensor] | None:
    """The state dict of ``weights``, from the hub cache or a download.

    Args:
        weights: a torchvision weight enum member.
        allow_random: outside the ``ci`` profile, return ``None`` (after a
            ``NOTE``) instead of raising when the file cannot be had.
        timeout: seconds allowed for each network operation of the download.
        consequence: what the caller does without the weights, ending the printed NOTE
            (``None``: the NOTE states only what is missing).

    Returns:
        The state dict (CPU tensors, float32 weights, read with
        ``weights_only=True``), or ``None`` when the caller should continue
        from random initialisation: the file is missing in the ``ci`` profile
        (no download is tried there), or could not be downloaded and
        ``allow_random`` is set.

    Raises:
        PretrainedWeightsUnavailable: the file is missing, the download
            failed and random initialisation is not allowed.
        RuntimeError: the cached file is corrupt (it says which file to delete).
    """
    path = cached_weights_path(weights)
    if not path.is_file():
        if config.profile_name() == "ci":
            _fallback_note(weights, consequence)
            return None
        try:
            _download(weights, path, timeout)
        except (OSError, RuntimeError) as exc:  # URLError and socket timeouts are OSErrors
            if allow_random:
                _fallback_note(weights, consequence)
                return None
            raise _unavailable(weights, f"download failed: {getattr(exc, 'reason', exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"{path} could not be read as {weights} ({exc}); delete it and load again "
                           "to download a fresh copy.") from exc


def _build(name: str, pretrained: bool, allow_random: bool,
           consequence: str | None = RANDOM_START) -> tuple[nn.Module, bool]:
    """The model named ``name`` and whether pretrained weights were loaded into it (``consequence``: as in
    ``load_weights``)."""
    spec = _spec(name)
    num_classes = len(spec.weights.meta["categories"])
    model = spec.builder(weights=None, num_classes=num_classes, **spec.build_kwargs)
    state = load_weights(spec.weights, allow_random=allow_random, consequence=consequence) if pretrained else None
    if state is not None:
        model.load_state_dict(state)
    return model, state is not None


def load_backbone(name: str, pretrained: bool = True, allow_random: bool = False) -> nn.Module:
    """A torchvision model by name (see ``MODELS``), with its pretrained weights.

    Args:
        name: ``"vgg16"``, ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"deeplabv3_resnet50"``,
            ``"deeplabv3_resnet101"`` or ``"deeplabv3_mobilenet_v3_large"``.
        pretrained: load the weights of ``weights_for(name)``; ``False`` gives
            torchvision's random initialisation (nothing is read or fetched).
        allow_random: outside the ``ci`` profile, fall back to random
            initialisation instead of raising when the weights cannot be had.

    Returns:
        The model in training mode, on the CPU, with the weights' head
        (1000 ImageNet classes, or 21 VOC classes for DeepLabV3).

    Raises:
        ValueError: unknown ``name``.
        PretrainedWeightsUnavailable: see :func:`load_weights`.
    """
    return _build(name, pretrained, allow_random)[0]


def pretrained_classifier(name: str = "resnet18", allow_random: bool = False) -> PretrainedClassifier:
    """An ImageNet classifier ready to predict, with its preprocessing and class names.

    Typical use::

        clf = pretrained_classifier("resnet18")
        batch = torch.stack([clf.transforms(img) for img in pil_images])   # N×3×224×224
        with torch.inference_mode():
            probs = clf.model(batch).softmax(dim=1)                         # N×1000
        names = [clf.categories[i] for i in probs.argmax(dim=1).tolist()]

    Check ``clf.pretrained`` before reading anything into the predictions: it
    is ``False`` when the weights were unavailable offline (``ci`` profile, or
    ``allow_random=True``) and the model is randomly initialised.

    Args:
        name: an ImageNet classifier in ``MODELS`` (``vgg16`` or a ``resnet``).
        allow_random: as in :func:`load_backbone`.

    Returns:
        A :class:`PretrainedClassifier` with the model in eval mode.
    """
    spec = _spec(name)
    if spec.task != "classification":
        classifiers = [key for key, value in MODELS.items() if value.task == "classification"]
        raise ValueError(f"{name!r} is not an ImageNet classifier; use one of {', '.join(classifiers)}.")
    # Without its weights a classifier predicts nothing worth reading: the NOTE says only what is missing.
    model, loaded = _build(name, pretrained=True, allow_random=allow_random, consequence=None)
    return PretrainedClassifier(model.eval(), spec.weights.transforms(), list(spec.weights.meta["categories"]), loaded)
