"""Fully convolutional networks (Long, Shelhamer and Darrell, CVPR 2015).

FCN-32s and FCN-8s on a VGG16 trunk, laid out as in the handout: one
attribute per layer (``conv1_1``, ``relu1_1``, ... ``pool5``, ``fc6``,
``fc7``, ``score_fr``, ...), so checkpoints of the Caffe/pytorch-fcn
models keep their parameter names.

Geometry. ``conv1_1`` pads by 100 pixels and the pools round up
(``ceil_mode=True``), so even a small image leaves the 7×7 ``fc6`` enough
room; the transposed convolutions then overshoot, and fixed crops (19 for
FCN-32s; 5, 9 and 31 for FCN-8s) line the score maps up with the input.
The output has the input's height and width for any input size.

Initialisation. The trunk is He-initialised (or copied from VGG16 with
:meth:`copy_params_from_vgg16`); the score layers start at zero, as in the
paper; every upsampling starts as bilinear interpolation. The final
upsampling (``upscore`` in FCN-32s, ``upscore8`` in FCN-8s) stays fixed,
the 2× ones (FCN-8s) are learned.
"""
from __future__ import annotations

import torch
from torch import nn

from .pretrained import load_backbone

VGG16_CONVS = ("conv1_1", "conv1_2",
               "conv2_1", "conv2_2",
               "conv3_1", "conv3_2", "conv3_3",
               "conv4_1", "conv4_2", "conv4_3",
               "conv5_1", "conv5_2", "conv5_3")


def get_upsampling_weight(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """Weights that make a ``ConvTranspose2d`` upsample each channel bilinearly.

    The kernel is the outer product of a 1-D tent of half-width
    ``(kernel_size + 1) // 2``; channel ``c`` maps only to channel ``c``.
    With stride ``s`` and ``kernel_size = 2 s`` the layer interpolates by ``s``.

    Args:
        in_channels, out_channels: must be equal (one tent per channel).
        kernel_size: side of the square kernel.

    Returns:
        float32 tensor in_channels×out_channels×kernel_size×kernel_size, the
        layout of ``ConvTranspose2d.weight``.
    """
    if in_channels != out_channels:
        raise ValueError(f"bilinear upsampling maps each channel to itself; got in_channels={in_channels} "
                         f"!= out_channels={out_channels}. Use the same number of channels.")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be positive, got {kernel_size}.")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    tent = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size, dtype=torch.float64)
    channels = torch.arange(in_channels)
    weight[channels, channels] = torch.outer(tent, tent)
    return weight.float()


def _crop(score: torch.Tensor, offset: int, size: tuple[int, int]) -> torch.Tensor:
    """``score[:, :, offset:offset+H, offset:offset+W]`` for ``size = (H, W)``."""
    height, width = size
    return score[:, :, offset:offset + height, offset:offset + width]


def _init_score(layer: nn.Conv2d) -> None:
    """Score layers start at zero, so a new FCN predicts uniform class scores."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _init_bilinear(layer: nn.ConvTranspose2d) -> None:
    with torch.no_grad():
        layer.weight.copy_(get_upsampling_weight(layer.in_channels, layer.out_channels, layer.kernel_size[0]))


def _check_n_class(n_class: int) -> int:
    if isinstance(n_class, bool) or not isinstance(n_class, int) or n_class < 1:
        raise ValueError(f"n_class must be a positive int (21 for VOC, background included); got {n_class!r}.")
    return n_class


def copy_params_from_vgg16(fcn: "_VGG16Trunk", vgg16: nn.Module) -> "_VGG16Trunk":
    """Copy a torchvision VGG16's weights into an FCN's trunk; returns ``fcn``.

    The 13 convolutions of ``vgg16.features`` go to ``conv1_1`` ... ``conv5_3``;
    the fully connected ``classifier[0]`` (25088→4096) and ``classifier[3]``
    (4096→4096) are reshaped into the 7×7 ``fc6`` and 1×1 ``fc7``
    convolutions. Tensors are copied, not shared. The score and upsampling
    layers are left as they are.

    Raises:
        ValueError: ``vgg16`` is not a torchvision VGG16 without batch norm.
    """
    convs = [m for m in vgg16.features if isinstance(m, nn.Conv2d)] if hasattr(vgg16, "features") else []
    has_bn = hasattr(vgg16, "features") and any(isinstance(m, nn.BatchNorm2d) for m in vgg16.features)
    if getattr(fcn, "width", 1.0) != 1.0:
        raise ValueError(f"ImageNet VGG16 weights fit only the full-width FCN (width=1), not width={fcn.width}; "
                         "for a narrow FCN use copy_convs_from with coursekit.models.cifar_vgg's network.")
    if len(convs) != len(VGG16_CONVS) or has_bn or not hasattr(vgg16, "classifier"):
        raise ValueError("copy_params_from_vgg16 needs a torchvision VGG16 without batch norm, "
                         "e.g. coursekit.models.pretrained.load_backbone('vgg16') or torchvision.models.vgg16().")
    fully_connected = [("fc6", vgg16.classifier[0]), ("fc7", vgg16.classifier[3])]
    with torch.no_grad():
        for name, source in zip(VGG16_CONVS, convs):
            getattr(fcn, name).weight.copy_(source.weight)
            getattr(fcn, name).bias.copy_(source.bias)
        for name, source in fully_connected:
            target = getattr(fcn, name)
            target.weight.copy_(source.weight.view_as(target.weight))
            target.bias.copy_(source.bias)
    return fcn


VGG16_WIDTHS = (64, 128, 256, 512, 512)  # channels of conv1 … conv5 at width 1
VGG16_FC = 4096                           # channels of fc6 and fc7 at width 1


def _scaled(channels: int, width: float) -> int:
    """``channels × width``, rounded, at least 1."""
    return max(1, round(channels * width))


def _check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must be a number in (0, 1] (1: VGG16 itself, 0.125: 1/8 of its channels); "
                         f"got {width!r}.")
    return float(width)


class VGG16Convs(nn.Module):
    """The 13 convolutions and 5 max-pools of VGG16, with a channel width multiplier.

    One attribute per layer (``conv1_1`` … ``pool5``), so the FCNs and the
    kit's CIFAR-10 VGG16 (:mod:`coursekit.models.cifar_vgg`) share their
    parameter names and weights copy across by name. ``width`` scales every
    layer's channels (``width=1`` is VGG16; ``0.125`` keeps 8, 16, 32, 64, 64
    channels, about 1/60 of the multiply-adds). ``first_padding`` is
    ``conv1_1``'s padding: 100 in the FCNs, 1 in the classifier.

    Args:
        width: channel multiplier in (0, 1].
        first_padding: zero padding of ``conv1_1`` on each side.
    """

    def __init__(self, width: float = 1.0, first_padding: int = 1) -> None:
        super().__init__()
        self.width = width = _check_width(width)
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in VGG16_WIDTHS)
        self.channels = (c1, c2, c3, c4, c5)

        # conv1: 1/1 -> pool1 1/2
        self.conv1_1 = nn.Conv2d(3, c1, 3, padding=first_padding)
        self.relu1_1 = nn.ReLU(inplace=True)
        self.conv1_2 = nn.Conv2d(c1, c1, 3, padding=1)
        self.relu1_2 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 1/2

        # conv2: 1/2 -> pool2 1/4
        self.conv2_1 = nn.Conv2d(c1, c2, 3, padding=1)
        self.relu2_1 = nn.ReLU(inplace=True)
        self.conv2_2 = nn.Conv2d(c2, c2, 3, padding=1)
        self.relu2_2 = nn.ReLU(inplace=True)
        self.pool2 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 1/4

        # conv3: 1/4 -> pool3 1/8
        self.conv3_1 = nn.Conv2d(c2, c3, 3, padding=1)
        self.relu3_1 = nn.ReLU(inplace=True)
        self.conv3_2 = nn.Conv2d(c3, c3, 3, padding=1)
        self.relu3_2 = nn.ReLU(inplace=True)
        self.conv3_3 = nn.Conv2d(c3, c3, 3, padding=1)
        self.relu3_3 = nn.ReLU(inplace=True)
        self.pool3 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 1/8

        # conv4: 1/8 -> pool4 1/16
        self.conv4_1 = nn.Conv2d(c3, c4, 3, padding=1)
        self.relu4_1 = nn.ReLU(inplace=True)
        self.conv4_2 = nn.Conv2d(c4, c4, 3, padding=1)
        self.relu4_2 = nn.ReLU(inplace=True)
        self.conv4_3 = nn.Conv2d(c4, c4, 3, padding=1)
        self.relu4_3 = nn.ReLU(inplace=True)
        self.pool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 1/16

        # conv5: 1/16 -> pool5 1/32
        self.conv5_1 = nn.Conv2d(c4, c5, 3, padding=1)
        self.relu5_1 = nn.ReLU(inplace=True)
        self.conv5_2 = nn.Conv2d(c5, c5, 3, padding=1)
        self.relu5_2 = nn.ReLU(inplace=True)
        self.conv5_3 = nn.Conv2d(c5, c5, 3, padding=1)
        self.relu5_3 = nn.ReLU(inplace=True)
        self.pool5 = nn.MaxPool2d(2, stride=2, ceil_mode=True)  # 1/32

    def _init_he(self, names: tuple[str, ...]) -> None:
        """He-initialise the named layers' weights and zero their biases.

        Subclasses call it once all their layers exist, so that a seeded
        network draws its random numbers in one fixed order.
        """
        for name in names:
            layer = getattr(self, name)
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def copy_convs_from(self, source: "VGG16Convs") -> "VGG16Convs":
        """Copy ``conv1_1`` … ``conv5_3`` from another :class:`VGG16Convs` of the same width; returns ``self``.

        Tensors are copied, not shared; every other layer is left as it is.

        Raises:
            ValueError: ``source`` is not a ``VGG16Convs`` or has other channel widths.
        """
        if not isinstance(source, VGG16Convs) or source.channels != self.channels:
            got = getattr(source, "channels", type(source).__name__)
            raise ValueError(f"copy_convs_from needs VGG16 convolutions with channels {self.channels}; got {got}. "
                             "Build both networks with the same width.")
        with torch.no_grad():
            for name in VGG16_CONVS:
                getattr(self, name).weight.copy_(getattr(source, name).weight)
                getattr(self, name).bias.copy_(getattr(source, name).bias)
        return self

    def convs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run conv1 … pool5.

        Args:
            x: float32 N×3×H×W.

        Returns:
            ``(pool3, pool4, pool5)``: float32 N×C3×h/8×w/8, N×C4×h/16×w/16
            and N×C5×h/32×w/32 (ceil), where h, w include ``first_padding``.
        """
        h = self.relu1_1(self.conv1_1(x))
        h = self.relu1_2(self.conv1_2(h))
        h = self.pool1(h)  # 1/2

        h = self.relu2_1(self.conv2_1(h))
        h = self.relu2_2(self.conv2_2(h))
        h = self.pool2(h)  # 1/4

        h = self.relu3_1(self.conv3_1(h))
        h = self.relu3_2(self.conv3_2(h))
        h = self.relu3_3(self.conv3_3(h))
        pool3 = h = self.pool3(h)  # 1/8

        h = self.relu4_1(self.conv4_1(h))
        h = self.relu4_2(self.conv4_2(h))
        h = self.relu4_3(self.conv4_3(h))
        pool4 = h = self.pool4(h)  # 1/16

        h = self.relu5_1(self.conv5_1(h))
        h = self.relu5_2(self.conv5_2(h))
        h = self.relu5_3(self.conv5_3(h))
        return pool3, pool4, self.pool5(h)  # 1/32


class _VGG16Trunk(VGG16Convs):
    """VGG16 turned fully convolutional: conv1 … conv5, fc6 and fc7 as convolutions.

    Shared by FCN-32s and FCN-8s; :meth:`trunk` returns the features the
    score layers read. Resolutions in the comments are relative to the
    padded input (``conv1_1`` adds 100 pixels on each side).

    Args:
        width: channel multiplier in (0, 1] (1: VGG16, which ImageNet weights need).
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__(width, first_padding=100)
        fc = _scaled(VGG16_FC, self.width)
        self.fc_channels = fc

        # fc6: VGG's first fully connected layer as a 7×7 convolution, 1/32
        self.fc6 = nn.Conv2d(self.channels[4], fc, 7)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout()

        # fc7: the second fully connected layer as a 1×1 convolution, 1/32
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout()

        self._init_he(VGG16_CONVS + ("fc6", "fc7"))

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"an FCN takes images N×3×H×W (float32, normalised); got shape {tuple(x.shape)}. "
                             "Add a batch dimension with x.unsqueeze(0) for a single image.")

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the VGG16 trunk.

        Args:
            x: float32 N×3×H×W.

        Returns:
            ``(pool3, pool4, fc7)``: float32 N×256×h3×w3 (1/8), N×512×h4×w4
            (1/16) and N×4096×h7×w7 (1/32, shrunk by the 7×7 ``fc6``), all
            relative to the input padded by 100 on each side (channels
            scaled by ``width``).
        """
        self._check_input(x)
        pool3, pool4, h = self.convs(x)  # 1/8, 1/16, 1/32
        h = self.drop6(self.relu6(self.fc6(h)))
        fc7 = self.drop7(self.relu7(self.fc7(h)))
        return pool3, pool4, fc7

    def copy_params_from_vgg16(self, vgg16: nn.Module) -> "_VGG16Trunk":
        """Copy a torchvision VGG16's conv and fc6/fc7 weights in; returns ``self``.

        See :func:`copy_params_from_vgg16`.
        """
        return copy_params_from_vgg16(self, vgg16)

    @classmethod
    def from_vgg16(cls, n_class: int = 21, pretrained: bool = True, allow_random: bool = False) -> "_VGG16Trunk":
        """A new FCN whose trunk starts from torchvision's ImageNet VGG16.

        Args:
            n_class: number of classes scored per pixel.
            pretrained: load the ImageNet VGG16 (``False``: keep the He initialisation).
            allow_random: continue from random initialisation when the weights
                are unavailable (the ``ci`` profile always does); see
                :func:`coursekit.models.pretrained.load_backbone`.
        """
        model = cls(n_class)
        if pretrained:
            model.copy_params_from_vgg16(load_backbone("vgg16", pretrained=True, allow_random=allow_random))
        return model


class FCN32s(_VGG16Trunk):
    """FCN-32s: score the 1/32 features, upsample 32× in one step.

    Args:
        n_class: number of classes, including background (21 for VOC).
        width: channel multiplier of the VGG16 trunk (1: the paper's network).

    Forward: images float32 N×3×H×W -> logits float32 N×n_class×H×W, for any H, W.
    """

    def __init__(self, n_class: int = 21, width: float = 1.0) -> None:
        n_class = _check_n_class(n_class)
        super().__init__(width)
        self.n_class = n_class
        self.score_fr = nn.Conv2d(self.fc_channels, n_class, 1)                         # 1/32
        self.upscore = nn.ConvTranspose2d(n_class, n_class, 64, stride=32, bias=False)  # 1/32 -> 1/1

        _init_score(self.score_fr)
        _init_bilinear(self.upscore)
        self.upscore.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images float32 N×3×H×W -> logits float32 N×n_class×H×W."""
        _, _, fc7 = self.trunk(x)
        h = self.score_fr(fc7)          # 1/32
        h = self.upscore(h)             # 1/1, overshoots the padded input
        return _crop(h, 19, x.shape[-2:]).contiguous()


class FCN8s(_VGG16Trunk):
    """FCN-8s: fuse the scores of fc7 (1/32), pool4 (1/16) and pool3 (1/8), upsample 8×.

    Args:
        n_class: number of classes, including background (21 for VOC).
        width: channel multiplier of the VGG16 trunk (1: the paper's network).

    Forward: images float32 N×3×H×W -> logits float32 N×n_class×H×W, for any H, W.
    """

    def __init__(self, n_class: int = 21, width: float = 1.0) -> None:
        n_class = _check_n_class(n_class)
        super().__init__(width)
        self.n_class = n_class
        self.score_fr = nn.Conv2d(self.fc_channels, n_class, 1)       # 1/32
        self.score_pool4 = nn.Conv2d(self.channels[3], n_class, 1)    # 1/16
        self.score_pool3 = nn.Conv2d(self.channels[2], n_class, 1)    # 1/8
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)       # 1/32 -> 1/16
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)  # 1/16 -> 1/8
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)      # 1/8 -> 1/1
        for score in (self.score_fr, self.score_pool4, self.score_pool3):
            _init_score(score)
        for upscore in (self.upscore2, self.upscore_pool4, self.upscore8):
            _init_bilinear(upscore)
        self.upscore8.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images float32 N×3×H×W -> logits float32 N×n_class×H×W."""
        pool3, pool4, fc7 = self.trunk(x)

        upscore2 = self.upscore2(self.score_fr(fc7))                             # 1/16
        score_pool4c = _crop(self.score_pool4(pool4), 5, upscore2.shape[-2:])    # 1/16
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4c)              # 1/8
        score_pool3c = _crop(self.score_pool3(pool3), 9, upscore_pool4.shape[-2:])  # 1/8
        h = self.upscore8(upscore_pool4 + score_pool3c)                          # 1/1
        return _crop(h, 31, x.shape[-2:]).contiguous()
