"""Segmentation and classification metrics built on one confusion matrix.

A K×K confusion matrix ``cm`` counts pixels (or images): ``cm[i, j]`` is the
number whose ground truth is class ``i`` and whose prediction is class ``j``
(rows = ground truth, columns = prediction). Every score here is read off it:

* pixel accuracy        ``trace(cm) / sum(cm)``
* class accuracy        ``cm[i, i] / sum(cm[i, :])``  (recall of class ``i``)
* intersection over union ``cm[i, i] / (sum(cm[i, :]) + sum(cm[:, i]) - cm[i, i])``

A class that never occurs gets NaN (0/0) and is left out of the means
(``nanmean``), as in chainercv.

:class:`ConfusionMatrix` accumulates the matrix batch by batch on the
tensors' device with one ``bincount`` per batch, so evaluating a whole
data set needs no Python loop over images. :func:`eval_semantic_segmentation`
is a drop-in for chainercv's function of the same name.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "pixel_accuracy",
    "class_accuracy",
    "mean_class_accuracy",
    "per_class_iou",
    "mean_iou",
    "scores",
    "eval_semantic_segmentation",
]


def _as_labels(labels, name: str) -> torch.Tensor:
    """``labels`` (tensor or array-like of integers) as an integer tensor."""
    tensor = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {tensor.dtype}; "
                        "for scores or logits pass `scores.argmax(dim=1)`.")
    return tensor


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> torch.Tensor:
    """Count (ground truth, prediction) pairs into a K×K matrix with one ``bincount``.

    Args:
        pred: predicted labels, integer tensor (or array) of any shape, e.g. N or N×H×W.
        target: ground-truth labels, integer tensor of the same shape.
        num_classes: K, the number of classes.
        ignore_index: pixels whose target equals it are skipped (``None``: skip
            nothing extra). Targets outside ``[0, K)`` are skipped as well.

    Returns:
        int64 tensor K×K on ``pred``'s device; rows = ground truth, columns = prediction.

    Raises:
        ValueError: shapes differ, K < 1, or a counted pixel has a prediction outside ``[0, K)``.
        TypeError: labels are not integers.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    num_classes = int(num_classes)
    pred = _as_labels(pred, "pred")
    target = _as_labels(target, "target").to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}; pass label maps, not logits (use argmax over classes).")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    if (valid & ((pred < 0) | (pred >= num_classes))).any():
        raise ValueError(f"predicted labels must lie in [0, {num_classes}) where the target is counted, "
                         f"got values from {int(pred[valid].min())} to {int(pred[valid].max())}; "
                         "check num_classes against the model's number of outputs.")
    # Skipped pixels go to one extra bin past the K*K real ones, which is then dropped.
    overflow = num_classes * num_classes
    index = torch.where(valid, target * num_classes + pred, torch.full_like(target, overflow))
    counts = torch.bincount(index, minlength=overflow + 1)
    return counts[:overflow].reshape(num_classes, num_classes)


def _as_matrix(cm) -> np.ndarray:
    """A square confusion matrix (tensor or array) as a float64 ndarray."""
    array = np.asarray(cm.detach().cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"a confusion matrix must be square K×K, got shape {array.shape}.")
    return array


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` with NaN (and no warning) where 0/0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (and no warning) when all are NaN."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def pixel_accuracy(cm) -> float:
    """Fraction of counted pixels predicted correctly: ``trace(cm) / sum(cm)``.

    Args:
        cm: K×K confusion matrix (tensor or ndarray), rows = ground truth.

    Returns:
        float in [0, 1]; NaN when ``cm`` counts nothing.
    """
    matrix = _as_matrix(cm)
    return float(_ratio(np.trace(matrix), matrix.sum()))


def class_accuracy(cm) -> np.ndarray:
    """Per-class accuracy (recall): ``cm[i, i] / sum(cm[i, :])``.

    Args:
        cm: K×K confusion matrix (tensor or ndarray), rows = ground truth.

    Returns:
        float64 ndarray K; NaN for a class absent from the ground truth.
    """
    matrix = _as_matrix(cm)
    return _ratio(np.diag(matrix), matrix.sum(axis=1))


def mean_class_accuracy(cm) -> float:
    """Mean of :func:`class_accuracy` over the classes present in the ground truth (nanmean)."""
    return _nanmean(class_accuracy(cm))


def per_class_iou(cm) -> np.ndarray:
    """Per-class intersection over union: ``TP / (TP + FP + FN)``.

    Args:
        cm: K×K confusion matrix (tensor or ndarray), rows = ground truth.

    Returns:
        float64 ndarray K; NaN for a class absent from both ground truth and prediction.
    """
    matrix = _as_matrix(cm)
    true_positive = np.diag(matrix)
    return _ratio(true_positive, matrix.sum(axis=1) + matrix.sum(axis=0) - true_positive)


def mean_iou(cm) -> float:
    """Mean of :func:`per_class_iou` over classes that occur (nanmean): the mIoU."""
    return _nanmean(per_class_iou(cm))


def scores(cm) -> dict:
    """All scores of a K×K confusion matrix in one dict.

    Returns:
        ``{'iou': ndarray K, 'miou': float, 'pixel_accuracy': float,
        'class_accuracy': ndarray K, 'mean_class_accuracy': float}``, arrays float64.
    """
    iou, accuracy = per_class_iou(cm), class_accuracy(cm)
    return {
        "iou": iou,
        "miou": _nanmean(iou),
        "pixel_accuracy": pixel_accuracy(cm),
        "class_accuracy": accuracy,
        "mean_class_accuracy": _nanmean(accuracy),
    }


class ConfusionMatrix:
    """A confusion matrix accumulated batch by batch (streaming evaluation).

    Example::

        cm = ConfusionMatrix(num_classes=21)
        for images, targets in loader:
            cm.update(model(images).argmax(dim=1), targets)
        print(cm.compute()["miou"])

    Args:
        num_classes: K, the number of classes.
        ignore_index: target value to skip (255 = VOC void); ``None`` skips nothing extra.
            Targets outside ``[0, K)`` are always skipped.
        device: where the matrix lives; inputs are moved there. ``None``: the
            matrix follows the device of the tensors passed to :meth:`update`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device=None):
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.device = None if device is None else torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Set every count back to zero."""
        self._matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                                   device=self.device or "cpu")

    def update(self, pred_labels, target) -> None:
        """Add one batch.

        Args:
            pred_labels: predicted labels, integer tensor of any shape (N, N×H×W, ...).
            target: ground-truth labels, integer tensor of the same shape.
        """
        pred_labels = _as_labels(pred_labels, "pred_labels")
        if self.device is not None:
            pred_labels = pred_labels.to(self.device)
        batch = confusion_matrix(pred_labels, target, self.num_classes, self.ignore_index)
        self._matrix = self._matrix.to(batch.device) + batch

    @property
    def matrix(self) -> torch.Tensor:
        """The counts so far: int64 tensor K×K, rows = ground truth, columns = prediction."""
        return self._matrix

    def compute(self) -> dict:
        """The scores of the counts so far (see :func:`scores`).

        Returns:
            dict with 'pixel_accuracy' (float), 'class_accuracy' (float64 ndarray K,
            NaN for classes absent from the ground truth), 'mean_class_accuracy' (float),
            'iou' (float64 ndarray K, NaN where a class is absent from both),
            'miou' (float, nanmean of 'iou').
        """
        return scores(self._matrix)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"counted={int(self._matrix.sum())})")


def _grown(matrix: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``matrix`` (K×K) zero-padded to ``num_classes``×``num_classes`` when that is larger."""
    if num_classes <= matrix.shape[0]:
        return matrix
    grown = matrix.new_zeros(num_classes, num_classes)
    grown[: matrix.shape[0], : matrix.shape[1]] = matrix
    return grown


def eval_semantic_segmentation(pred_labels: Iterable, gt_labels: Iterable) -> dict:
    """Evaluate label maps like ``chainercv.evaluations.eval_semantic_segmentation``.

    The number of classes K is the largest label seen in either input plus one,
    so the matrix grows as the images stream past. Negative ground-truth values
    (chainercv uses -1) are ignored.

    Two deliberate differences from chainercv, both turning silent miscounts into
    errors: a prediction iterable longer than the ground truth is reported (chainercv's
    ``zip`` swallows one extra prediction), and a negative prediction at a counted
    pixel raises a clear ValueError (in chainercv it lands in a wrong cell or fails in bincount).

    Args:
        pred_labels: iterable of predicted label maps, each an integer NumPy array
            (or tensor) H×W; H and W may differ from image to image.
        gt_labels: iterable of ground-truth label maps, same shapes as the predictions.

    Returns:
        dict with 'iou' (float64 ndarray K), 'miou' (float), 'pixel_accuracy' (float),
        'class_accuracy' (float64 ndarray K), 'mean_class_accuracy' (float); a class
        absent from both inputs has NaN IoU and is left out of the means.

    Raises:
        ValueError: a label map is not 2-D ('ndim of labels should be two.'), a pair's
            shapes differ ('Shape of ground truth and prediction should be same.'),
            or the iterables differ in length ('Length of input iterables need to be same').
    """
    pred_iter, gt_iter = iter(pred_labels), iter(gt_labels)
    counts = torch.zeros(0, 0, dtype=torch.int64)
    end = object()
    while True:
        pred, gt = next(pred_iter, end), next(gt_iter, end)
        if pred is end or gt is end:
            if pred is not gt:
                raise ValueError("Length of input iterables need to be same: pass one prediction "
                                 "per ground-truth label map.")
            break
        pred, gt = _as_labels(pred, "pred_labels"), _as_labels(gt, "gt_labels")
        if pred.ndim != 2 or gt.ndim != 2:
            raise ValueError("ndim of labels should be two. Pass one H×W label map per image, "
                             f"got shapes {tuple(pred.shape)} and {tuple(gt.shape)}.")
        if pred.shape != gt.shape:
            raise ValueError("Shape of ground truth and prediction should be same. "
                             f"Got prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)}.")
        if pred.numel() == 0:
            continue
        counts = _grown(counts.to(pred.device), max(int(pred.max()), int(gt.max())) + 1)
        if counts.shape[0]:
            counts += confusion_matrix(pred, gt, counts.shape[0], ignore_index=None)
    return scores(counts)
