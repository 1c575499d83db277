"""The colorization networks of the handout: PoolUpsampleNet, ConvTransposeNet and UNet.

All three map a grayscale image float32 ``N×NIC×H×W`` to colour scores
(logits) float32 ``N×NC×H×W``, one score per palette colour and pixel, with
``H`` and ``W`` multiples of 4. Each takes ``(kernel, num_filters,
num_colours, num_in_channels)`` as in the handout, and is built of five
stages: two that halve the resolution, two that double it, and a last
convolution at full resolution that scores the colours.

Padding. Stride-1 convolutions keep the size as ``padding="same"`` does
(``SameConv2d``; for an even kernel one pixel more on the right and bottom). A stride-2 convolution
halves an even size with ``padding = (kernel - 1) // 2``, and a stride-2
transposed convolution, whose output is ``(h - 1)·2 - 2·padding + kernel +
output_padding``, doubles it with the same padding and ``output_padding = 2·padding
+ 2 - kernel``: padding 1 / output padding 1 for kernel 3, 1 / 0 for kernel 4,
2 / 1 for kernel 5. (The handout's ``kernel // 2`` with ``output_padding=1``
is right for odd kernels only: for kernel 4 it returns 34×34 from 32×32.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def transpose_padding(kernel: int) -> tuple[int, int]:
    """``(padding, output_padding)`` with which a stride-2 convolution halves an even size and a stride-2
    transposed convolution doubles one, for a square ``kernel`` of side 2 or more."""
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 2:
        raise ValueError(f"kernel must be an int >= 2; got {kernel!r}.")
    padding = (kernel - 1) // 2
    return padding, 2 * padding + 2 - kernel


def _down(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """A stride-2 convolution: float ``N×in×h×w`` -> ``N×out×h/2×w/2`` (``h``, ``w`` even)."""
    padding, _ = transpose_padding(kernel)
    return nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=padding)


def _up(in_channels: int, out_channels: int, kernel: int) -> nn.ConvTranspose2d:
    """A stride-2 transposed convolution: float ``N×in×h×w`` -> ``N×out×2h×2w``."""
    padding, output_padding = transpose_padding(kernel)
    return nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=padding,
                              output_padding=output_padding)


class SameConv2d(nn.Conv2d):
    """A stride-1 convolution that keeps height and width, for odd and even kernels.

    It computes what ``nn.Conv2d(..., padding="same")`` does (an even kernel pads one pixel more on the
    right and bottom than on the left and top) without PyTorch's warning about an extra padded copy.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2 if kernel % 2 else 0)
        before = (kernel - 1) // 2
        self.extra_padding = None if kernel % 2 else (before, kernel - 1 - before, before, kernel - 1 - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float ``N×in×h×w`` -> ``N×out×h×w``."""
        return super().forward(x if self.extra_padding is None else F.pad(x, self.extra_padding))


def _same(in_channels: int, out_channels: int, kernel: int) -> SameConv2d:
    """A stride-1 convolution that keeps height and width."""
    return SameConv2d(in_channels, out_channels, kernel)


def _check_input(x: torch.Tensor, channels: int, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] % 4 or x.shape[3] % 4:
        raise ValueError(f"{name} takes grayscale images N×{channels}×H×W with H and W multiples of 4; "
                         f"got shape {tuple(x.shape)}.")


class PoolUpsampleNet(nn.Module):
    """The handout's first network: max pooling to go down, nearest-neighbour upsampling to go up.

    Args:
        kernel: side of every convolution's kernel (3 in the handout; 4 and 5 keep the size too).
        num_filters: NF, the channels of the first stage (the second has 2·NF).
        num_colours: NC, the palette's size (24): the output channels.
        num_in_channels: NIC, the input channels (1 for grayscale).

    Forward: float32 ``N×NIC×H×W`` -> logits float32 ``N×NC×H×W``.
    """

    def __init__(self, kernel: int = 3, num_filters: int = 32, num_colours: int = 24, num_in_channels: int = 1):
        super().__init__()
        nf, nc, nic = num_filters, num_colours, num_in_channels
        self.num_in_channels = nic
        # down: 1/1 -> 1/2
        self.layer1 = nn.Sequential(_same(nic, nf, kernel), nn.MaxPool2d(2), nn.BatchNorm2d(nf), nn.ReLU())
        # down: 1/2 -> 1/4
        self.layer2 = nn.Sequential(_same(nf, 2 * nf, kernel), nn.MaxPool2d(2), nn.BatchNorm2d(2 * nf), nn.ReLU())
        # up: 1/4 -> 1/2
        self.layer3 = nn.Sequential(_same(2 * nf, nf, kernel), nn.Upsample(scale_factor=2), nn.BatchNorm2d(nf),
                                    nn.ReLU())
        # up: 1/2 -> 1/1
        self.layer4 = nn.Sequential(_same(nf, nc, kernel), nn.Upsample(scale_factor=2), nn.BatchNorm2d(nc),
                                    nn.ReLU())
        # colour scores: 1/1
        self.layer5 = _same(nc, nc, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale float32 ``N×NIC×H×W`` -> colour logits float32 ``N×NC×H×W``."""
        _check_input(x, self.num_in_channels, type(self).__name__)
        out1 = self.layer1(x)     # 1/2
        out2 = self.layer2(out1)  # 1/4
        out3 = self.layer3(out2)  # 1/2
        out4 = self.layer4(out3)  # 1/1
        return self.layer5(out4)  # 1/1


class ConvTransposeNet(nn.Module):
    """PoolUpsampleNet with learnt resampling: stride-2 convolutions go down, stride-2 transposed
    convolutions go up (see ``transpose_padding``). Arguments and shapes as ``PoolUpsampleNet``."""

    def __init__(self, kernel: int = 3, num_filters: int = 32, num_colours: int = 24, num_in_channels: int = 1):
        super().__init__()
        nf, nc, nic = num_filters, num_colours, num_in_channels
        self.num_in_channels = nic
        # down: 1/1 -> 1/2
        self.layer1 = nn.Sequential(_down(nic, nf, kernel), nn.BatchNorm2d(nf), nn.ReLU())
        # down: 1/2 -> 1/4
        self.layer2 = nn.Sequential(_down(nf, 2 * nf, kernel), nn.BatchNorm2d(2 * nf), nn.ReLU())
        # up: 1/4 -> 1/2
        self.layer3 = nn.Sequential(_up(2 * nf, nf, kernel), nn.BatchNorm2d(nf), nn.ReLU())
        # up: 1/2 -> 1/1
        self.layer4 = nn.Sequential(_up(nf, nc, kernel), nn.BatchNorm2d(nc), nn.ReLU())
        # colour scores: 1/1
        self.layer5 = _same(nc, nc, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale float32 ``N×NIC×H×W`` -> colour logits float32 ``N×NC×H×W``."""
        _check_input(x, self.num_in_channels, type(self).__name__)
        out1 = self.layer1(x)     # 1/2
        out2 = self.layer2(out1)  # 1/4
        out3 = self.layer3(out2)  # 1/2
        out4 = self.layer4(out3)  # 1/1
        return self.layer5(out4)  # 1/1


class UNet(nn.Module):
    """ConvTransposeNet with the handout's skip connections (Ronneberger et al., 2015), joined with
    ``torch.cat`` along the channels: the second-to-last stage also reads the first stage's output
    (both at 1/2, NF + NF channels), and the last convolution also reads the grayscale input itself
    (NC + NIC channels). Arguments and shapes as ``PoolUpsampleNet``."""

    def __init__(self, kernel: int = 3, num_filters: int = 32, num_colours: int = 24, num_in_channels: int = 1):
        super().__init__()
        nf, nc, nic = num_filters, num_colours, num_in_channels
        self.num_in_channels = nic
        # down: 1/1 -> 1/2
        self.layer1 = nn.Sequential(_down(nic, nf, kernel), nn.BatchNorm2d(nf), nn.ReLU())
        # down: 1/2 -> 1/4
        self.layer2 = nn.Sequential(_down(nf, 2 * nf, kernel), nn.BatchNorm2d(2 * nf), nn.ReLU())
        # up: 1/4 -> 1/2
        self.layer3 = nn.Sequential(_up(2 * nf, nf, kernel), nn.BatchNorm2d(nf), nn.ReLU())
        # up: 1/2 -> 1/1, reading layer3's and layer1's outputs
        self.layer4 = nn.Sequential(_up(nf + nf, nc, kernel), nn.BatchNorm2d(nc), nn.ReLU())
        # colour scores: 1/1, reading layer4's output and the input
        self.layer5 = _same(nc + nic, nc, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale float32 ``N×NIC×H×W`` -> colour logits float32 ``N×NC×H×W``."""
        _check_input(x, self.num_in_channels, type(self).__name__)
        out1 = self.layer1(x)                              # 1/2
        out2 = self.layer2(out1)                           # 1/4
        out3 = self.layer3(out2)                           # 1/2
        out4 = self.layer4(torch.cat((out3, out1), dim=1))  # 1/1, skip from layer1
        return self.layer5(torch.cat((out4, x), dim=1))     # 1/1, skip from the input
