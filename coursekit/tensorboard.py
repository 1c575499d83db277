"""Training runs in TensorBoard, beside the notebooks' own plots.

``engine.fit(..., logger=...)`` hands a ``TensorBoardLogger`` every epoch's
losses, accuracies, mIoU and learning rate, and the model; the logger writes
them as scalars and, when it was given a few example images, paints the model's
predictions for them as a grid (the inputs and targets once, the predictions
every epoch, so TensorBoard's step slider shows them improve).

The notebooks call ``run_logger(name, ...)``, which returns a logger only when
``COURSEKIT_TENSORBOARD`` names a folder, so nothing is written by default::

    COURSEKIT_TENSORBOARD=runs jupyter lab          # or, in a notebook: %env COURSEKIT_TENSORBOARD=runs
    tensorboard --logdir runs                       # on Colab: %load_ext tensorboard, %tensorboard --logdir runs

TensorBoard is an optional dependency (the kit's ``lab`` extra, or
``pip install tensorboard``); it is imported only when a logger is made.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from . import engine, viz

ENV_VAR = "COURSEKIT_TENSORBOARD"

LabelPainter = Callable[[torch.Tensor], torch.Tensor]
ImagePainter = Callable[[torch.Tensor], torch.Tensor]


def _summary_writer():
    """torch's ``SummaryWriter`` class, or an ``ImportError`` that says how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch imports the tensorboard package here
        raise ImportError("logging to TensorBoard needs the tensorboard package: pip install tensorboard "
                          "(or install the kit with its lab extra, coursekit-cv[lab]); unset "
                          f"{ENV_VAR} to train without it.") from error
    return SummaryWriter


def log_root() -> Path | None:
    """The folder named by ``COURSEKIT_TENSORBOARD`` (runs are written in sub-folders of it), else ``None``."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def paint_labels(labels: torch.Tensor, palette=None) -> torch.Tensor:
    """Label maps as colour images: int64 ``N×H×W`` -> float32 ``N×3×H×W`` in [0, 1].

    Class ``k`` takes ``palette[k]`` (``K×3`` uint8; default: the VOC colours, see ``viz.colorize_mask``);
    255 (void) takes the void colour.
    """
    if palette is None:
        from .data.voc import VOC_PALETTE as palette
    painted = [torch.from_numpy(viz.colorize_mask(mask, palette)) for mask in labels.cpu()]
    return torch.stack(painted).permute(0, 3, 1, 2).float().div(255)


def _as_rgb(images: torch.Tensor) -> torch.Tensor:
    """float ``N×C×H×W`` with C = 1 or 3 -> float32 ``N×3×H×W`` clamped to [0, 1]."""
    images = images.detach().float().cpu()
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.clamp(0, 1)


def first_examples(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` items of a segmentation dataset, stacked: float32 ``N×C×H×W`` images and int64
    ``N×H×W`` targets (N = ``min(count, len(dataset))``), for ``TensorBoardLogger``'s ``examples``."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not items:
        raise ValueError("first_examples needs a dataset with at least one item and count >= 1.")
    return torch.stack([image for image, _ in items]), torch.stack([torch.as_tensor(t) for _, t in items])


class TensorBoardLogger:
    """Writes one training run to a TensorBoard log folder.

    Args:
        log_dir: the run's folder (TensorBoard shows each folder under ``--logdir`` as a run).
        examples: optional ``(images, targets)``: float32 ``N×C×H×W`` as the model takes them and int64
            ``N×H×W`` label maps; their predictions are painted after every epoch.
        show_inputs: ``images -> float N×3×H×W in [0, 1]`` for the input row (default: the images as they
            are, clamped; pass ``lambda x: viz.denormalize(x, mean, std)`` for normalised images).
        show_labels: ``labels N×H×W -> float N×3×H×W in [0, 1]`` for targets and predictions (default:
            ``paint_labels`` with the VOC colours).
    """

    def __init__(self, log_dir: str | os.PathLike, examples: tuple[torch.Tensor, torch.Tensor] | None = None,
                 show_inputs: ImagePainter | None = None, show_labels: LabelPainter | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.examples, self.show_inputs = examples, show_inputs or _as_rgb
        self.show_labels = show_labels or paint_labels
        self.writer = _summary_writer()(log_dir=str(self.log_dir))
        self._shown_examples = False

    def log_epoch(self, epoch: int, scalars: Mapping[str, float | None], model: torch.nn.Module) -> None:
        """Write epoch ``epoch`` (0-based; TensorBoard's step is ``epoch + 1``).

        Args:
            scalars: tag -> value, e.g. ``{"loss/train": 1.2, "miou/val": 0.4, "lr": 1e-3}``; ``None``s are
                left out.
            model: the network; with ``examples`` its eval-mode predictions are painted under
                ``examples/prediction`` (it is left in the mode it was in).
        """
        step = epoch + 1
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)
        if self.examples is not None:
            images, targets = self.examples
            if not self._shown_examples:
                self.writer.add_images("examples/input", _as_rgb(self.show_inputs(images)), 0)
                self.writer.add_images("examples/target", _as_rgb(self.show_labels(targets)), 0)
                self._shown_examples = True
            device = next(model.parameters()).device
            predictions = engine.predict(model, images, device=device)
            self.writer.add_images("examples/prediction", _as_rgb(self.show_labels(predictions)), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the log files."""
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_logger(run: str, examples: tuple[torch.Tensor, torch.Tensor] | None = None,
               show_inputs: ImagePainter | None = None,
               show_labels: LabelPainter | None = None) -> TensorBoardLogger | None:
    """A ``TensorBoardLogger`` for ``log_root() / run`` when ``COURSEKIT_TENSORBOARD`` is set, else ``None``.

    ``run`` names the run, e.g. ``"05_colorization/UNet"``; the other arguments are ``TensorBoardLogger``'s.
    ``engine.fit(..., logger=None)`` logs nothing, so a notebook passes the result on as it is.
    """
    root = log_root()
    if root is None:
        return None
    return TensorBoardLogger(root / run, examples=examples, show_inputs=show_inputs, show_labels=show_labels)
