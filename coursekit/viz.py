"""Figures: label maps in colour, image / ground truth / prediction grids.

Images may be PIL images or tensors (``3×H×W`` float; normalised ones are
shown after ``denormalize`` when ``mean``/``std`` are given). Label maps may
be PIL images, NumPy arrays or tensors (``H×W`` integers, 255 = void).
Every function returns a ``matplotlib.figure.Figure`` with titled panels.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

VOID = 255
VOID_COLOUR = (224, 224, 192)  # used for 255 when a palette has fewer than 256 colours
PANEL_INCHES = 3.0
LEGEND_COLUMNS = 6
LEGEND_ROW_INCHES = 0.25


def _labels(mask) -> np.ndarray:
    """A label map (PIL, array or tensor, ``H×W``) as an int64 array."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    labels = np.asarray(mask)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"a label map is an H×W array of integer class ids; got shape {labels.shape}, "
                         f"dtype {labels.dtype} (for logits pass logits.argmax(dim=0)).")
    return labels.astype(np.int64)


def _palette(palette) -> np.ndarray:
    """A palette as a uint8 ``K×3`` array (accepts ``K×3`` or a flat PIL-style list of ``3K`` values)."""
    colours = np.asarray(palette, dtype=np.int64)
    if colours.ndim == 1 and colours.size % 3 == 0:
        colours = colours.reshape(-1, 3)
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.min() < 0 or colours.max() > 255:
        raise ValueError(f"a palette is K×3 RGB values in 0..255; got shape {np.shape(palette)}")
    return colours.astype(np.uint8)


def _colour_of(label: int, colours: np.ndarray) -> np.ndarray:
    """The RGB colour of one class id (void included)."""
    if label == VOID and len(colours) <= VOID:
        return np.array(VOID_COLOUR, dtype=np.uint8)
    return colours[label]


def colorize_mask(mask, palette) -> np.ndarray:
    """Paint a label map: class ``k`` gets ``palette[k]``.

    Args:
        mask: ``H×W`` class ids (PIL, NumPy or tensor); 255 is void.
        palette: ``K×3`` RGB colours (uint8). Void takes ``palette[255]`` when
            the palette has 256 colours, else ``VOID_COLOUR``.

    Returns:
        uint8 array ``H×W×3``.

    Raises:
        ValueError: a class id that the palette has no colour for.
    """
    labels, colours = _labels(mask), _palette(palette)
    lookup = np.zeros((max(len(colours), VOID + 1), 3), dtype=np.uint8)
    lookup[:len(colours)] = colours
    if len(colours) <= VOID:
        lookup[VOID] = VOID_COLOUR
    unknown = np.unique(labels[((labels >= len(colours)) & (labels != VOID)) | (labels < 0)])
    if unknown.size:
        raise ValueError(f"the mask holds class ids {unknown.tolist()} but the palette has only {len(colours)} "
                         "colours; pass the dataset's palette.")
    return lookup[labels]


def denormalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``(x - mean) / std`` per channel, clamped to [0, 1] for display.

    Args:
        tensor: float ``C×H×W`` or ``N×C×H×W``.
        mean, std: one value per channel.

    Returns:
        A new float tensor of the same shape.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (3, 4):
        raise ValueError("denormalize takes a C×H×W or N×C×H×W tensor, got "
                         f"{type(tensor).__name__}{tuple(getattr(tensor, 'shape', ()))}")
    channels = tensor.shape[-3]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"the tensor has {channels} channels but mean/std have {len(mean)}/{len(std)} values")
    shape = (channels, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(shape)
    return (tensor * std_t + mean_t).clamp(0.0, 1.0)


def _display_image(image, mean=None, std=None) -> np.ndarray:
    """An image (PIL, or float ``3×H×W`` tensor) as an ``H×W×3`` array matplotlib can show.

    A tensor is denormalised with ``mean``/``std`` when given; otherwise one
    with values outside [0, 1] is rescaled to its own min..max.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError(f"an image is a PIL image or a C×H×W tensor, got {type(image).__name__}"
                         f"{tuple(getattr(image, 'shape', ()))}")
    image = image.detach().cpu().float()
    if mean is not None and std is not None:
        image = denormalize(image, mean, std)
    elif image.min() < 0 or image.max() > 1:
        image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image.permute(1, 2, 0).numpy()


def _as_list(items, name: str) -> list:
    """A batch (tensor with a leading N) or a sequence as a list of single items."""
    if items is None:
        return []
    if isinstance(items, (torch.Tensor, np.ndarray)):
        return list(items)
    if isinstance(items, Image.Image):
        raise TypeError(f"{name} must be a list or a batch; wrap a single image in a list (or use show_pair)")
    return list(items)


def _legend_handles(maps: list[np.ndarray], colours: np.ndarray, class_names) -> list[Patch]:
    """One legend entry per class id present in ``maps`` (void named "void")."""
    present = np.unique(np.concatenate([m.ravel() for m in maps])).tolist()
    handles = []
    for label in present:
        if label == VOID:
            name = "void"
        elif class_names is not None and label < len(class_names):
            name = class_names[label]
        else:
            name = f"class {label}"
        handles.append(Patch(facecolor=_colour_of(label, colours) / 255.0, edgecolor="black", label=name))
    return handles


def show_segmentation(images, targets, predictions=None, palette=None, class_names=None, titles=None,
                      mious=None, mean=None, std=None) -> Figure:
    """A grid with one row per sample: image | ground truth | prediction.

    Args:
        images: a list of PIL images / ``3×H×W`` tensors, or an ``N×3×H×W`` batch.
        targets: ground-truth label maps (list or ``N×H×W`` batch), 255 = void.
        predictions: predicted label maps like ``targets``, or None for two columns.
        palette: ``K×3`` colours; default: the PASCAL VOC palette.
        class_names: names for the legend (default: "class k").
        titles: one title per row, put in front of each panel's title.
        mious: one mIoU per prediction, written in its panel title.
        mean, std: normalisation to undo on tensor images (see ``denormalize``).

    Returns:
        The figure (one row per sample, legend of the classes present at the bottom).
    """
    if palette is None:
        from .data.voc import VOC_PALETTE
        palette = VOC_PALETTE
    colours = _palette(palette)
    images, targets = _as_list(images, "images"), [_labels(t) for t in _as_list(targets, "targets")]
    preds = [_labels(p) for p in _as_list(predictions, "predictions")]
    rows = len(images)
    if rows == 0 or len(targets) != rows or (predictions is not None and len(preds) != rows):
        raise ValueError(f"need one target (and prediction) per image: got {rows} images, {len(targets)} targets"
                         + (f", {len(preds)} predictions" if predictions is not None else ""))
    for name, values in (("titles", titles), ("mious", mious)):
        if values is not None and len(values) != rows:
            raise ValueError(f"{name} needs one entry per image ({rows}), got {len(values)}")
    columns = 3 if predictions is not None else 2
    handles = _legend_handles(targets + preds, colours, class_names)
    legend_columns = min(len(handles), LEGEND_COLUMNS)
    legend_inches = LEGEND_ROW_INCHES * -(-len(handles) // legend_columns) + 0.2
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + legend_inches))
    for row in range(rows):
        prefix = f"{titles[row]}: " if titles is not None else ""
        panels = [(_display_image(images[row], mean, std), "image"),
                  (colorize_mask(targets[row], colours), "ground truth")]
        if predictions is not None:
            suffix = f" (mIoU {mious[row]:.3f})" if mious is not None else ""
            panels.append((colorize_mask(preds[row], colours), "prediction" + suffix))
        for ax, (picture, name) in zip(axes[row], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(prefix + name, fontsize=9)
            ax.axis("off")
    fig.legend(handles=handles, loc="lower center", ncol=legend_columns, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    return fig


def show_pair(image, target, palette=None, class_names=None, title=None, mean=None, std=None) -> Figure:
    """One image and its label map side by side (see ``show_segmentation``)."""
    return show_segmentation([image], [target], palette=palette, class_names=class_names,
                             titles=None if title is None else [title], mean=mean, std=std)


def show_images(images, titles=None, mean=None, std=None, columns: int = 8, panel_inches: float = 1.6) -> Figure:
    """A grid of images with a title under each, e.g. samples and their class names.

    Args:
        images: a list of PIL images / ``3×H×W`` tensors, or an ``N×3×H×W`` batch.
        titles: one string per image (class name, "true / predicted", ...).
        mean, std: normalisation to undo on tensor images (see ``denormalize``).
        columns: images per row.
        panel_inches: width of one image in the figure.

    Returns:
        The figure.
    """
    images = _as_list(images, "images")
    if not images or (titles is not None and len(titles) != len(images)):
        raise ValueError(f"need at least one image and one title per image; got {len(images)} images"
                         + (f" and {len(titles)} titles" if titles is not None else ""))
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(panel_inches * columns, (panel_inches + 0.2) * rows))
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(images):
            ax.imshow(_display_image(images[index], mean, std), interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[index], fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(history, metrics: Sequence[str] = ("loss", "accuracy", "miou")) -> Figure:
    """Learning curves: one panel per metric, training and validation curves per epoch.

    Args:
        history: an ``engine.History`` or a dict of per-epoch lists named
            ``train_<metric>`` / ``val_<metric>`` (``History.to_dict()``).
        metrics: the metrics to draw; those with no recorded values are skipped.

    Returns:
        The figure, one panel per metric that has values.
    """
    curves = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    panels = [m for m in metrics if f"train_{m}" in curves or f"val_{m}" in curves]
    if not panels:
        raise ValueError(f"the history has none of the metrics {list(metrics)}; it holds {sorted(curves)}.")
    fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.5 * len(panels), 3.5))
    for ax, metric in zip(axes[0], panels):
        for split in ("train", "val"):
            values = curves.get(f"{split}_{metric}")
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=split)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_confusion(matrix, class_names: Sequence[str], normalize: bool = True, title: str = "Confusion matrix") -> Figure:
    """A confusion matrix as a heat map (rows = true class, columns = prediction).

    Args:
        matrix: ``K×K`` counts (NumPy array or tensor), e.g. ``evaluate(...)['confusion']``.
        class_names: K names.
        normalize: show each row as fractions of that class's samples.
        title: figure title.

    Returns:
        The figure; cells are annotated when K <= 12.
    """
    counts = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"the matrix has shape {counts.shape} but there are {k} class names; expected ({k}, {k}).")
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            counts = counts / counts.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.5, 0.55 * k + 2))
    shown = ax.imshow(counts, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(shown, ax=ax, fraction=0.046, label="fraction of the true class" if normalize else "count")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= 12:
        for (row, col), value in np.ndenumerate(counts):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.2f}" if normalize else f"{int(value)}", ha="center", va="center",
                        fontsize=7, color="white" if value > 0.6 * np.nanmax(counts) else "black")
    fig.tight_layout()
    return fig


def plot_per_class(values, class_names: Sequence[str], title: str = "Per-class accuracy",
                   ylabel: str = "accuracy") -> Figure:
    """Bars of one score per class; a dict of several series gives grouped bars.

    Args:
        values: K numbers (e.g. ``evaluate(...)['class_accuracy']``), or
            ``{series name: K numbers}`` to compare models. NaN draws no bar.
        class_names: K names.

    Returns:
        The figure.
    """
    series = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()} if isinstance(values, dict) \
        else {ylabel: np.asarray(values, dtype=np.float64)}
    k = len(class_names)
    for name, scores in series.items():
        if scores.shape != (k,):
            raise ValueError(f"{name!r} has {scores.size} values but there are {k} class names.")
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.25 * k * len(series) + 2)), 3.5))
    for index, (name, scores) in enumerate(series.items()):
        ax.bar(np.arange(k) + (index - (len(series) - 1) / 2) * width, scores, width, label=name)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
