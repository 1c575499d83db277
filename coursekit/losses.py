"""Losses written from their formulas: cross-entropy and the soft IoU loss.

Both take raw network outputs (logits) and integer targets, and both skip
pixels whose target equals ``ignore_index`` (255 = VOC void, the flower trimap
band).

Cross-entropy of one pixel with logits ``z`` (C values) and true class ``y``::

    -log softmax(z)[y] = logsumexp(z) - z[y]

computed with ``logsumexp`` so large logits do not overflow.
"""
from __future__ import annotations

import torch

__all__ = ["cross_entropy", "soft_iou_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise a clear error unless ``logits`` is float N×C×... and ``target`` int N×... to match."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor N×C×..., got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}.")
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices (use .long()), got "
                        f"{getattr(target, 'dtype', type(target).__name__)}.")
    if logits.ndim < 2:
        raise ValueError(f"logits must be N×C or N×C×H×W, got shape {tuple(logits.shape)}; "
                         "add a batch dimension with .unsqueeze(0).")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: "
                         f"expected {expected} (the logits' shape without the class dimension).")


def _counted(target: torch.Tensor, num_classes: int, ignore_index: int | None) -> torch.Tensor:
    """Bool mask of the pixels that count; raise if a counted target lies outside ``[0, num_classes)``."""
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if (counted & ((target < 0) | (target >= num_classes))).any():
        raise ValueError(f"target holds class indices outside [0, {num_classes}) (and not ignore_index="
                         f"{ignore_index}): found values {sorted(set(target[counted].unique().tolist()))[:10]}; "
                         "check the number of output channels and the dataset's labels.")
    return counted


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int | None = 255, reduction: str = "mean") -> torch.Tensor:
    """Softmax cross-entropy from the math; same values and gradients as ``nn.CrossEntropyLoss``.

    Args:
        logits: float tensor N×C (classification) or N×C×H×W (any trailing dims), unnormalised scores.
        target: int64 tensor N (or N×H×W) of class indices in ``[0, C)`` or ``ignore_index``.
        weight: optional float tensor C, a weight per class (rare classes count more).
        ignore_index: target value that contributes nothing (``None``: none ignored).
        reduction: ``'mean'`` (weighted mean: sum of ``weight[y] * loss`` divided by the sum
            of ``weight[y]`` over counted pixels, as PyTorch does), ``'sum'``, or ``'none'``
            (per-pixel losses shaped like ``target``, 0 at ignored pixels).

    Returns:
        float tensor: a scalar for 'mean'/'sum', shaped like ``target`` for 'none'.
        When every pixel is ignored, 'mean' is NaN (0/0, as in PyTorch; its gradient is
        zero) and 'sum' is 0.

    Raises:
        ValueError: bad shapes, unknown reduction, or a target outside ``[0, C)``.
        TypeError: float targets or integer logits.
    """
    _check_pair(logits, target)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    num_classes = logits.shape[1]
    if weight is not None and tuple(weight.shape) != (num_classes,):
        raise ValueError(f"weight must hold one value per class, shape ({num_classes},), got {tuple(weight.shape)}.")
    counted = _counted(target, num_classes, ignore_index)
    safe_target = torch.where(counted, target, torch.zeros_like(target)).long()
    log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    picked = log_probs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    pixel_weight = torch.ones_like(picked) if weight is None else weight.to(picked)[safe_target]
    pixel_weight = torch.where(counted, pixel_weight, torch.zeros_like(pixel_weight))
    losses = torch.where(counted, -picked * pixel_weight, torch.zeros_like(picked))
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / pixel_weight.sum()


def soft_iou_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = 255,
                  eps: float = 1e-6) -> torch.Tensor:
    """Soft (differentiable) IoU loss ``1 - I / U`` with probabilities in place of hard labels.

    With X the predicted probability of a class and Y its one-hot target, summed over
    all counted pixels of the batch::

        I = Σ X·Y        U = Σ (X + Y - X·Y)        L = 1 - (I + eps) / (U + eps)

    ``eps`` keeps 0/0 away: a class that is neither present nor predicted gives L = 0.

    Binary outputs score the foreground (class 1) only:

    * N×1×H×W logits: X = sigmoid(logits), targets 0/1;
    * N×2×H×W logits: X = softmax(logits)[:, 1], targets 0/1.

    Multi-class outputs N×C×H×W (C ≥ 3): X = softmax over classes, one IoU loss per
    class, averaged over all C classes.

    Args:
        logits: float tensor N×C×H×W (any trailing dims).
        target: int64 tensor N×H×W of class indices or ``ignore_index``.
        ignore_index: pixels with this target are left out of every sum.
        eps: smoothing added to I and U (default 1e-6).

    Returns:
        float scalar tensor in [0, 1]: 0 for a perfect prediction, 1 when nothing overlaps.
    """
    _check_pair(logits, target)
    if logits.ndim < 3:
        raise ValueError(f"soft_iou_loss needs dense logits N×C×H×W, got shape {tuple(logits.shape)}.")
    num_classes = max(logits.shape[1], 2)  # one sigmoid channel still means two classes
    counted = _counted(target, num_classes, ignore_index)
    if logits.shape[1] == 1:
        probs, classes = torch.sigmoid(logits), [1]
    elif logits.shape[1] == 2:
        probs, classes = torch.softmax(logits, dim=1)[:, 1:], [1]
    else:
        probs, classes = torch.softmax(logits, dim=1), list(range(num_classes))
    # One-hot targets N×len(classes)×H×W for the scored classes.
    onehot = torch.stack([target == c for c in classes], dim=1).to(probs.dtype)
    mask = counted.unsqueeze(1).to(probs.dtype)
    sum_dims = [0, *range(2, probs.ndim)]
    intersection = (probs * onehot * mask).sum(dim=sum_dims)
    union = ((probs + onehot - probs * onehot) * mask).sum(dim=sum_dims)
    return (1 - (intersection + eps) / (union + eps)).mean()
