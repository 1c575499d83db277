"""The ResNet encoder-decoder of the VOC segmentation handout.

Encoder: the five residual stages of a torchvision ResNet (ImageNet
weights when available), without its pooling and classifier::

    stem    conv1 7×7/2, bn1, relu, maxpool/2   1/4    64 channels (ResNet-18)
    layer1  residual blocks                     1/4    64
    layer2  residual blocks, stride 2           1/8   128   <- skip
    layer3  residual blocks, stride 2           1/16  256
    layer4  residual blocks, stride 2           1/32  512

Decoder: two upsamplings and one skip connection::

    layer4 (1/32) --upsample #1--> 1/8 --concat with layer2--> fuse (3×3 conv, BN, ReLU)
        --> classifier (1×1 conv) --upsample #2--> input size

Both upsamplings are bilinear to an exact target size, so any input size
works. Like the handout's network, ``forward(images, targets)`` returns the
loss in training mode and the logits otherwise.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import cross_entropy
from .pretrained import load_backbone

BACKBONES = ("resnet18", "resnet34", "resnet50")
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _out_channels(stage: nn.Module) -> int:
    """Channels a ResNet stage outputs: those of its last batch norm."""
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


class ResNetEncoderDecoder(nn.Module):
    """Per-pixel classifier: ResNet encoder, decoder with one skip connection.

    Args:
        num_classes: classes scored per pixel, background included (21 for VOC).
        backbone: ``"resnet18"`` (default), ``"resnet34"`` or ``"resnet50"``.
        pretrained: start the encoder from ImageNet weights (via
            :func:`coursekit.models.pretrained.load_backbone`; offline, the
            ``ci`` profile continues from random initialisation with a NOTE).
        allow_random: outside ``ci``, fall back to random initialisation
            instead of raising when the weights are unavailable.
        criterion: ``criterion(logits, targets) -> scalar loss`` used in
            training mode; default cross-entropy skipping ``ignore_index``.
        ignore_index: target value of unlabelled pixels (255 = VOC void).
        decoder_channels: channels of the fused decoder features.

    Forward:
        ``model(images)`` with images float32 N×3×H×W returns logits float32
        N×num_classes×H×W. ``model(images, targets)`` with targets int64 N×H×W
        returns the scalar loss in training mode (``model.train()``) and the
        logits in eval mode.
    """

    def __init__(self, num_classes: int = 21, backbone: str = "resnet18", pretrained: bool = True,
                 allow_random: bool = False, criterion: Criterion | None = None, ignore_index: int = 255,
                 decoder_channels: int = 128) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int (21 for VOC); got {num_classes!r}.")
        self.num_classes = num_classes
        self.criterion = criterion or functools.partial(cross_entropy, ignore_index=ignore_index)

        resnet = load_backbone(backbone, pretrained=pretrained, allow_random=allow_random)
        # encoder: five residual stages
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)  # 1/4
        self.layer1 = resnet.layer1  # 1/4
        self.layer2 = resnet.layer2  # 1/8
        self.layer3 = resnet.layer3  # 1/16
        self.layer4 = resnet.layer4  # 1/32

        # decoder: upsample layer4 to layer2's size, fuse with the skip, classify
        skip_channels, deep_channels = _out_channels(self.layer2), _out_channels(self.layer4)
        self.fuse = nn.Sequential(
            nn.Conv2d(deep_channels + skip_channels, decoder_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(decoder_channels),
            nn.ReLU(inplace=True))                                                   # 1/8
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)                # 1/8

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores per pixel.

        Args:
            images: float32 N×3×H×W (ImageNet-normalised), any H, W >= 1.

        Returns:
            float32 N×num_classes×H×W.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be float32 N×3×H×W; got shape {tuple(images.shape)}. "
                             "Add a batch dimension with x.unsqueeze(0) for a single image.")
        h = self.layer1(self.stem(images))           # 1/4
        skip = h = self.layer2(h)                     # 1/8
        h = self.layer4(self.layer3(h))               # 1/32

        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)  # upsample #1: 1/8
        h = self.fuse(torch.cat([h, skip], dim=1))                                        # skip connection
        h = self.classifier(h)
        return F.interpolate(h, size=images.shape[-2:], mode="bilinear", align_corners=False)  # upsample #2: 1/1

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The loss in training mode when ``targets`` (int64 N×H×W) are given, else the logits N×C×H×W."""
        logits = self.logits(images)
        if self.training and targets is not None:
            return self.criterion(logits, targets)
        return logits
