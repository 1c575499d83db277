"""Parameter counts and a layer-by-layer table of output shapes.

``print(summary(FCN8s(), (1, 3, 64, 64)))`` shows how the 100-pixel padding
and the pools change the resolution stage by stage.
"""
from __future__ import annotations

import torch
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
