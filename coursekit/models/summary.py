"""Parameter counts and a layer-by-layer table of output shapes.

``print(summary(FCN8s(), (1, 3, 64, 64)))`` shows how the 100-pixel padding
and the pools change the resolution stage by stage; ``print(layer_counts(model,
(1, 1, 32, 32)))`` counts the weights, outputs and connections of every layer.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import config


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _shape(output: object) -> str:
    if isinstance(output, torch.Tensor):
        return "×".join(map(str, output.shape))
    if isinstance(output, (tuple, list)):
        return ", ".join(_shape(item) for item in output)
    return type(output).__name__


def summary(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None) -> str:
    """A table of every leaf layer's output shape and parameter count, in call order.

    Runs one forward pass (eval mode, no gradients) on a zero input of
    ``input_shape`` (e.g. ``(1, 3, 64, 64)``, float32) and restores the
    model's training mode afterwards.

    Args:
        model: any module whose forward takes one tensor.
        input_shape: shape of the dummy input, batch dimension included.
        device: where to run; default the device of the model's parameters
            (or :func:`coursekit.config.get_device` for a parameter-free model).

    Returns:
        Text with one line per layer call (``name  type  output shape  parameters``)
        and a last line with the total and trainable parameter counts.
    """
    if len(input_shape) < 2 or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive ints with a batch dimension, e.g. (1, 3, 64, 64); "
                         f"got {input_shape!r}.")
    first = next(model.parameters(), None)
    device = torch.device(device) if device is not None else (first.device if first is not None
                                                              else config.get_device())
    rows: list[tuple[str, str, str, str]] = []

    def record(name: str):
        def hook(module: nn.Module, _inputs: object, output: object) -> None:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, _shape(output), f"{params:,}"))
        return hook

    leaves = [(name, m) for name, m in model.named_modules() if name and not any(m.children())]
    handles = [m.register_forward_hook(record(name)) for name, m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    header = ("layer", "type", "output shape", "parameters")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.append(f"total parameters: {count_parameters(model):,} "
                 f"(trainable: {count_parameters(model, trainable_only=True):,})")
    return "\n".join(lines)


# ---------- weights, outputs and connections, layer by layer ----------

_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_COUNTED = (*_CONVOLUTIONS, *_POOLS, nn.BatchNorm2d, nn.Upsample)


@dataclass
class LayerCount:
    """One row of ``layer_counts``: a leaf layer's counts for one image (``counted`` False: listed only)."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    weights: int
    outputs: int
    connections: int
    counted: bool


@dataclass
class CountTable:
    """The rows of ``layer_counts`` in call order; ``totals`` adds up the counted rows."""

    rows: list[LayerCount]

    @property
    def totals(self) -> dict[str, int]:
        """``{'weights': ..., 'outputs': ..., 'connections': ...}`` over the counted rows."""
        counted = [row for row in self.rows if row.counted]
        return {key: sum(getattr(row, key) for row in counted) for key in ("weights", "outputs", "connections")}

    def __str__(self) -> str:
        header = ("layer", "type", "output", "weights", "outputs", "connections")
        cells = [header]
        for row in self.rows:
            counts = [f"{getattr(row, key):,}" if row.counted else "-" for key in ("weights", "outputs", "connections")]
            cells.append((row.name, row.kind if row.counted else f"{row.kind} (not counted)",
                          "×".join(map(str, row.output_shape)), *counts))
        cells.append(("total", "", "", *(f"{value:,}" for value in self.totals.values())))
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths))).rstrip() for row in cells)


def _unit_response(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Connections of a convolution: the sum of its output for a ones input of ``input_shape`` (``C×H×W``)
    when every weight is 1 and every bias 0, i.e. the number of (input value, weight, output value) triples;
    zero padding feeds nothing."""
    unit = copy.deepcopy(module).cpu().float()
    with torch.no_grad():
        unit.weight.fill_(1.0)
        if unit.bias is not None:
            unit.bias.zero_()
        return int(unit(torch.ones(1, *input_shape)).double().sum().round())


def _pool_connections(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Connections of a pooling layer: the input values inside each output's window (padding excluded), summed."""
    if isinstance(module, nn.MaxPool2d) and module.dilation not in (1, (1, 1)):
        raise ValueError("layer_counts does not count dilated pooling")
    windows = F.avg_pool2d(torch.ones(1, *input_shape, dtype=torch.float64), module.kernel_size, module.stride,
                           module.padding, ceil_mode=module.ceil_mode, divisor_override=1)
    return int(windows.sum().round())


def _connections(module: nn.Module, input_shape: tuple[int, ...], outputs: int) -> int:
    """How many (input value, output value) pairs the layer joins directly, for one image."""
    if isinstance(module, _CONVOLUTIONS):
        return _unit_response(module, input_shape)
    if isinstance(module, _POOLS):
        return _pool_connections(module, input_shape)
    if isinstance(module, nn.Upsample) and module.mode != "nearest":
        raise ValueError(f"layer_counts counts nearest-neighbour upsampling only, not mode {module.mode!r}")
    return outputs  # batch norm (a per-channel scale and shift at test time), nearest upsampling: one input each


def layer_counts(model: nn.Module, input_shape: tuple[int, ...]) -> CountTable:
    """Weights, outputs and connections of every leaf layer of ``model``, for one image of ``input_shape``.

    Counting convention (the numbers are for one image; the batch dimension of ``input_shape`` is ignored):

    * counted layers are convolutions (also transposed), pooling, batch norm and upsampling; activations
      (ReLU, ...) and other leaves are listed but not counted;
    * **weights**: the layer's learnt parameters: a ``k×k`` convolution has ``k²·C_in·C_out`` weights plus
      ``C_out`` biases, batch norm ``2·C`` (scale and shift; the running statistics are not learnt);
    * **outputs**: the values the layer outputs, ``C·H·W``;
    * **connections**: the pairs (input value, output value) in which the output reads that input value
      directly, once per weight that joins them: an output of a ``k×k`` convolution reads ``k²·C_in`` input
      values, fewer at the borders, because zero padding is not an input (a stride-1 ``3×3`` convolution
      with padding 1 on ``H×W`` has ``C_in·C_out·(3H-2)(3W-2)`` connections); a pooling output reads the
      input values of its window; a batch-norm output reads one input value (at test time it scales and
      shifts each channel), and so does a nearest-neighbour upsampling output.

    Runs one forward pass (eval mode, no gradients, on the CPU on a copy of the model) on zeros.

    Args:
        model: a module whose forward takes one tensor.
        input_shape: ``(N, C, H, W)``, e.g. ``(1, 1, 32, 32)``.

    Returns:
        A ``CountTable``: ``rows`` (``LayerCount`` per leaf layer call) and ``totals``; ``str()`` of it is a table.

    Raises:
        ValueError: ``input_shape`` is not 4 positive ints; a layer is of a kind whose connections are not
            defined here (bilinear upsampling, dilated pooling).
    """
    if len(input_shape) != 4 or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (N, C, H, W) positive ints, e.g. (1, 1, 32, 32); got {input_shape!r}.")
    model = copy.deepcopy(model).cpu().eval()
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append((name, module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:])))
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules()
               if name and not any(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape[1:]))
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name, module, in_shape, out_shape in calls:
        outputs = math.prod(out_shape)
        counted = isinstance(module, _COUNTED)
        rows.append(LayerCount(name, type(module).__name__, out_shape,
                               sum(p.numel() for p in module.parameters(recurse=False)), outputs,
                               _connections(module, in_shape, outputs) if counted else 0, counted))
    return CountTable(rows)
