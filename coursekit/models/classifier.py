"""The CIFAR-10 classifiers of notebook 03.

``Net`` is the handout's small LeNet-style network; ``BetterNet`` adds what
makes a CNN train fast and generalise: more and wider 3×3 convolutions,
batch normalisation after each one, global average pooling and dropout
before the classifier. Both map float32 ``N×3×32×32`` images to logits
float32 ``N×num_classes``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """The handout's network: two 5×5 convolutions, then three linear layers.

    Shapes (N images): 3×32×32 -conv1-> 6×28×28 -pool-> 6×14×14 -conv2->
    16×10×10 -pool-> 16×5×5 -flatten-> 400 -fc1-> 120 -fc2-> 84 -fc3-> K.
    With K = 10 it has 62,006 parameters.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``N×3×32×32`` -> logits float32 ``N×num_classes``."""
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution (same size, no bias: batch norm has one) -> batch norm -> ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class BetterNet(nn.Module):
    """A VGG-style CNN with batch norm and dropout.

    Three stages of two conv-BN-ReLU blocks, each stage ending in a 2×2 max
    pool: 3×32×32 -> w×16×16 -> 2w×8×8 -> 4w×4×4 (``w = width``); then global
    average pooling -> 4w, dropout and one linear layer -> K logits.

    Args:
        num_classes: K.
        width: channels of the first stage (64 for the full run, less on a CPU).
        dropout: drop probability before the classifier.
    """

    def __init__(self, num_classes: int = 10, width: int = 64, dropout: float = 0.2):
        super().__init__()
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need width >= 1 and 0 <= dropout < 1; got width={width}, dropout={dropout}.")
        channels = [3, width, 2 * width, 4 * width]
        stages = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages += [_conv_bn_relu(c_in, c_out), _conv_bn_relu(c_out, c_out), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*stages)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``N×3×32×32`` -> logits float32 ``N×num_classes``."""
        return self.classifier(self.features(x))
