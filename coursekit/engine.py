"""Training and evaluation loops shared by the course notebooks.

The loops are written to be read. ``fit`` runs the classic epoch loop::

    for epoch in range(epochs):
        model.train()
        for images, targets in train_loader:
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        metrics = evaluate(model, val_loader, ...)

and adds what a real run needs: the device, a progress bar, a check that the
loss is still a number, a learning-rate scheduler, the best model state,
checkpoints, mixed precision and channels_last memory (``coursekit.precision``), and training on several
processes when ``torchrun`` starts the script (``DistributedDataParallel``, see ``coursekit.distributed``).
``evaluate`` streams a confusion matrix over the whole loader, so every
accuracy and IoU is computed over the evaluated set itself.

Shapes
------
Classification: images float32 ``N×C×H×W``, targets int64 ``N``, logits
float32 ``N×K`` (cast to float32 after a bf16 or float16 forward pass, so
losses and metrics are float32). Segmentation: targets int64 ``N×H×W`` (``ignore_index``,
255 by default, marks pixels to skip), logits float32 ``N×K×H×W``.

A model trained with ``loss_fn=None`` computes its own loss: in train mode
``model(images, targets)`` returns the scalar loss, in eval mode
``model(images)`` returns logits.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import config, tempfiles
from . import distributed as ddp
from . import precision as amp
from .metrics import ConfusionMatrix
from .metrics import scores as matrix_scores

MONITORS = ("accuracy", "miou", "loss")


@dataclass
class History:
    """What ``fit`` measured, one entry per epoch.

    ``train_accuracy`` stays empty for a model that returns its own loss
    (its outputs are not seen); the ``val_*`` lists stay empty without a
    validation loader. ``best_epoch`` (0-based) and ``best_score`` name the
    epoch with the best monitored validation metric. ``precision`` and
    ``channels_last`` say what the run computed in (``coursekit.precision``).
    """

    monitor: str = "accuracy"
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_miou: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    precision: str = "32"
    channels_last: bool = False

    def __len__(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, list[float]]:
        """The non-empty per-epoch lists by name (plain floats, e.g. for plotting or a checkpoint)."""
        names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_miou", "lr")
        return {name: list(getattr(self, name)) for name in names if getattr(self, name)}


def _logits(outputs) -> torch.Tensor:
    """The logits of a model's output; torchvision segmentation models return ``{'out': logits, ...}``."""
    return outputs["out"] if isinstance(outputs, dict) else outputs


def _count_valid(targets: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """How many targets count (all of them, or those not equal to ``ignore_index``); a 0-d int64 tensor."""
    if ignore_index is None:
        return torch.tensor(targets.numel(), device=targets.device)
    return (targets != ignore_index).sum()


def _count_correct(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Correct arg-max predictions among the valid targets; a 0-d int64 tensor.

    Args:
        logits: float ``N×K`` or ``N×K×H×W``.
        targets: int64 ``N`` or ``N×H×W``.
    """
    correct = logits.argmax(dim=1) == targets
    if ignore_index is not None:
        correct &= targets != ignore_index
    return correct.sum()


def _to_device(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, targets)`` of a loader's batch, moved to ``device``."""
    try:
        images, targets = batch
    except (TypeError, ValueError):
        raise TypeError("a loader must yield (images, targets) pairs; "
                        f"got a batch of type {type(batch).__name__}") from None
    return images.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _resolve(device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device``; ``None`` is the kit's device (``config.get_device()``)."""
    return torch.device(device) if device is not None else config.get_device()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader, num_classes: int | None = None, loss_fn=None,
             device: torch.device | str | None = None, ignore_index: int | None = 255, precision: str = "32",
             channels_last: bool | None = False) -> dict:
    """Loss, accuracy and IoU of ``model`` over every batch of ``loader``.

    The model runs in eval mode under ``torch.inference_mode`` (no dropout,
    batch norm uses its running statistics, no autograd graph) and its
    previous mode is restored afterwards. Predictions are the arg-max of the
    logits; one confusion matrix is accumulated over the whole loader.

    Args:
        model: maps images float32 ``N×C×H×W`` to logits ``N×K`` or ``N×K×H×W``.
        loader: yields ``(images, targets)``; targets int64 ``N`` or ``N×H×W``.
        num_classes: K; ``None`` takes it from the logits.
        loss_fn: ``loss_fn(logits, targets)`` with mean reduction; ``None``
            uses cross-entropy that skips ``ignore_index``.
        device: where to compute; ``None`` is ``config.get_device()``.
        ignore_index: target value to skip (VOC void is 255); ``None`` skips nothing.
        precision: ``'32'`` (the default: scores as a float32 loop of your own computes them, whatever the
            training used), ``'bf16'``, ``'16-mixed'`` or ``'auto'`` for the forward pass (see
            ``coursekit.precision``; the loss and the metrics are computed in float32 either way). ``fit``
            validates in its own precision.
        channels_last: images and weights in channels_last memory (default off); ``None``: the default of
            ``coursekit.precision``.

    Returns:
        A dict with ``loss`` (mean over all evaluated samples or valid
        pixels, not over batches), ``accuracy`` (correct / evaluated; pixel
        accuracy for segmentation), ``miou``, ``mean_class_accuracy``,
        ``iou`` and ``class_accuracy`` (float64 arrays of K, NaN for absent
        classes), ``confusion`` (int64 array K×K, rows = truth) and
        ``count`` (how many samples or pixels were evaluated).
    """
    device = _resolve(device)
    compute = (amp.resolve_precision(precision, device), amp.resolve_channels_last(channels_last, model, device))
    with amp.memory_format(model, compute[1]):
        return _evaluate_here(model, loader, num_classes, loss_fn, device, ignore_index, compute)


@torch.inference_mode()
def _evaluate_here(model: torch.nn.Module, loader, num_classes: int | None, loss_fn, device: torch.device,
                   ignore_index: int | None, compute: tuple[str, bool]) -> dict:
    """``evaluate`` in this process, with ``compute`` = (precision, channels_last) resolved and the model's
    weights already in that memory format."""
    confusion, loss_sum, count = _evaluation_sums(model, loader, num_classes, loss_fn, device, ignore_index, compute)
    if confusion is None:
        raise ValueError("the loader yielded no batches; check the dataset and the batch size.")
    return _scores(confusion.matrix, loss_sum, count)


@torch.inference_mode()
def _evaluate_shards(model: torch.nn.Module, shard, num_classes: int | None, loss_fn, device: torch.device,
                     ignore_index: int | None, compute: tuple[str, bool]) -> dict:
    """``evaluate`` under DDP: each process evaluates its shard of the validation batches, then the sums are added
    over the processes, so that every process returns the scores of the whole loader.

    Args:
        shard: this process's batches, ``ddp.shard_loader(val_loader, equal=False)``: each batch is evaluated once,
            by one process, and the confusion matrix (int64) is exact; only the loss's float64 sum is added in
            another order than in one process.
    """
    confusion, loss_sum, count = _evaluation_sums(model, shard, num_classes, loss_fn, device, ignore_index, compute)
    # A process whose shard is empty (fewer batches than processes) has no matrix: K is the one the others saw.
    k = int(ddp.all_reduce(torch.tensor(confusion.num_classes if confusion else 0, device=device), op="max"))
    if k == 0:
        raise ValueError("the validation loader yielded no batches; check the dataset and the batch size.")
    matrix = confusion.matrix if confusion else torch.zeros(k, k, dtype=torch.int64, device=device)
    for total in (matrix, loss_sum, count):
        ddp.all_reduce(total)
    return _scores(matrix, loss_sum, count)


def _evaluation_sums(model: torch.nn.Module, loader, num_classes: int | None, loss_fn, device: torch.device,
                     ignore_index: int | None, compute: tuple[str, bool]
                     ) -> tuple[ConfusionMatrix | None, torch.Tensor, torch.Tensor]:
    """What ``evaluate`` adds up over ``loader`` (same arguments), in eval mode; the model's mode is restored.

    ``compute`` is (precision, channels_last), resolved; the model's weights are already in that memory format.

    Returns:
        The confusion matrix (``None`` when ``loader`` yielded no batch), the loss summed over the evaluated
        samples or pixels (float64, 0-d) and their count (int64, 0-d); both tensors on ``device``.
    """
    was_training = model.training
    model.to(device).eval()
    confusion = None
    # Sums stay on the device (no synchronisation per batch); a batch whose every pixel is ignored
    # has a NaN mean loss and adds nothing.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for batch in loader:
        images, targets = _to_device(batch, device)
        with amp.autocast(compute[0], device):
            logits = _logits(model(amp.images_in(images, compute[1]))).float()
        if confusion is None:
            confusion = ConfusionMatrix(num_classes or logits.shape[1], ignore_index=ignore_index, device=device)
        if loss_fn is None:
            loss = F.cross_entropy(logits, targets, ignore_index=-100 if ignore_index is None else ignore_index)
        else:
            loss = loss_fn(logits, targets)
        n = _count_valid(targets, ignore_index)
        loss_sum += torch.where(n > 0, loss.double() * n, 0.0)
        count += n
        confusion.update(logits.argmax(dim=1), targets)
    model.train(was_training)
    return confusion, loss_sum, count


def _scores(matrix: torch.Tensor, loss_sum: torch.Tensor, count: torch.Tensor) -> dict:
    """``evaluate``'s dict from the confusion matrix (int64 K×K), the loss sum (float64) and the count (int64)."""
    found = matrix_scores(matrix)
    count = int(count)
    return {
        "loss": float(loss_sum) / count if count else float("nan"),
        "accuracy": float(found["pixel_accuracy"]),
        "miou": float(found["miou"]),
        "mean_class_accuracy": float(found["mean_class_accuracy"]),
        "iou": np.asarray(found["iou"], dtype=np.float64),
        "class_accuracy": np.asarray(found["class_accuracy"], dtype=np.float64),
        "confusion": matrix.cpu().numpy(),
        "count": count,
    }


@torch.inference_mode()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Arg-max class of every image, computed in eval mode in batches.

    Args:
        images: float32 ``N×C×H×W``, prepared as during training (normalised).

    Returns:
        int64 ``N`` (classification) or ``N×H×W`` (segmentation), on the CPU.
    """
    if images.dim() != 4:
        raise ValueError(f"predict takes a batch of images N×C×H×W; got shape {tuple(images.shape)} "
                         "(use images.unsqueeze(0) for a single image).")
    device = _resolve(device)
    was_training = model.training
    model.to(device).eval()
    labels = [_logits(model(chunk.to(device))).argmax(dim=1).cpu() for chunk in images.split(batch_size)]
    model.train(was_training)
    return torch.cat(labels)


def batchnorm_losses(model: torch.nn.Module, loader, loss_fn=None,
                     device: torch.device | str | None = None) -> dict[str, float]:
    """The mean loss over ``loader`` with batch norm in both of its modes, the model left untouched.

    In eval mode batch norm divides by its *running* averages; in train mode by
    the statistics of the batch itself. Early in training the running averages
    lag behind the fast-changing features, so the two can differ by far: this
    is why a validation loss (eval mode) can lie far above the training loss
    (train mode) of the same epoch. Dropout stays off in both.

    Args:
        loader: ``(images, targets)`` batches: float32 N×C×H×W and int64 N or N×H×W (255 = void).
        loss_fn: ``(logits, targets) -> mean loss``; ``None``: cross-entropy ignoring 255.

    Returns:
        ``{"running_statistics": float, "batch_statistics": float}``, each the
        mean of the batches' losses weighted by their number of images.
    """
    loss_fn = loss_fn or (lambda logits, y: F.cross_entropy(logits, y, ignore_index=255))
    device = _resolve(device)
    probe = copy.deepcopy(model).to(device).eval()    # a copy: train-mode batch norm updates running averages
    norms = [m for m in probe.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 0.0                            # train mode must not move the averages between batches
    sums, count = {"running_statistics": 0.0, "batch_statistics": 0.0}, 0
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            for key, batch_mode in (("running_statistics", False), ("batch_statistics", True)):
                for norm in norms:
                    norm.train(batch_mode)
                sums[key] += float(loss_fn(_logits(probe(images)), targets)) * len(images)
            count += len(images)
    if count == 0:
        raise ValueError("batchnorm_losses needs at least one batch; the loader is empty.")
    return {key: total / count for key, total in sums.items()}


def train_step(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
               optimizer: torch.optim.Optimizer, loss_fn=None, precision: str = "32",
               scaler: torch.amp.GradScaler | None = None) -> tuple[float, torch.Tensor | None]:
    """One optimisation step on one batch: forward, loss, backward, update.

    Args:
        images: float32 ``N×C×H×W`` on the model's device.
        targets: int64 ``N`` or ``N×H×W`` on the same device.
        loss_fn: ``loss_fn(logits, targets)`` -> scalar; ``None`` when
            ``model(images, targets)`` returns its own loss.
        precision: ``'32'``, ``'bf16'`` or ``'16-mixed'`` (resolved, see ``coursekit.precision``): the forward
            pass runs under that autocast, and ``loss_fn`` gets the logits cast to float32.
        scaler: the gradient scaler of ``'16-mixed'`` (``precision.grad_scaler``); ``None`` otherwise.

    Returns:
        The batch's loss as a float (before the update) and the float32 logits
        (``None`` for a model that returns its own loss).

    Raises:
        FloatingPointError: the loss is NaN or infinite; nothing is updated.
    """
    loss, logits = _forward(model, images, targets, loss_fn, precision)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise _not_finite(str(loss_value), optimizer)
    _update(loss, optimizer, scaler)
    return loss_value, logits


def _forward(model, images, targets, loss_fn, precision: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``train_step``'s float32 loss (0-d, with its graph) and float32 logits (``None`` for a model that returns
    its own loss). The network runs under ``precision``'s autocast; ``loss_fn`` outside it, on float32 logits."""
    with amp.autocast(precision, images.device):
        outputs = model(images, targets) if loss_fn is None else _logits(model(images))
    if loss_fn is None:
        return outputs.float(), None
    logits = outputs.float()
    return loss_fn(logits, targets), logits


def _update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward pass from ``loss`` and one optimizer step (through ``scaler`` when there is one: the loss is
    scaled before ``backward``, the gradients unscaled before the step, which is skipped if they overflowed)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _not_finite(loss: str, optimizer: torch.optim.Optimizer) -> FloatingPointError:
    """The error for a training loss ``loss`` (e.g. ``'nan'``) that is not a finite number."""
    return FloatingPointError(
        f"the training loss became {loss}; training stopped. Lower the learning rate "
        f"(it is {_current_lr(optimizer):g}), and check that the inputs are normalised and the "
        "targets are valid class indices.")


def _step_or_skip(model, images, targets, optimizer, loss_fn, ignore_index, precision, scaler
                  ) -> tuple[float, torch.Tensor | None] | None:
    """``train_step``, or ``None`` (nothing updated) for a batch whose every target is ignored.

    Raises:
        FloatingPointError: the loss is not finite although some targets count.
    """
    try:
        return train_step(model, images, targets, optimizer, loss_fn, precision, scaler)
    except FloatingPointError:
        if int(_count_valid(targets, ignore_index)) == 0:
            return None  # every target is ignored: the mean loss is 0/0 and there is nothing to learn
        raise


def _agreed_step(model, images, targets, optimizer, loss_fn, ignore_index, precision, scaler
                 ) -> tuple[float, torch.Tensor | None] | None:
    """``_step_or_skip`` under DDP, where all processes step together: no process may skip or stop alone, since
    the others would wait for its gradients.

    If any process's loss is not finite, every process skips this step (returns ``None``) when each such
    process's targets are all ignored, and every process raises otherwise.

    Raises:
        FloatingPointError: on every process, when some process's loss is not finite although it has targets.
    """
    loss, logits = _forward(model, images, targets, loss_fn, precision)
    loss_value = loss.item()
    finite = math.isfinite(loss_value)
    stuck = not finite and int(_count_valid(targets, ignore_index)) > 0
    # How many processes have a loss that is not finite, and how many of them have targets to learn from.
    failed, stopped = ddp.all_reduce(torch.tensor([int(not finite), int(stuck)], device=images.device)).tolist()
    if stopped:
        what = "NaN or infinite" if finite else str(loss_value)
        raise _not_finite(f"{what} on {failed} of {ddp.world_size()} processes", optimizer)
    if failed:
        return None
    _update(loss, optimizer, scaler)
    return loss_value, logits


def _train_one_epoch(model, loader, optimizer, loss_fn, device, ignore_index, epoch, scheduler_per_batch,
                     parallel: bool, compute: tuple[str, bool], scaler):
    """One pass over ``loader`` in train mode; returns (mean loss, accuracy or None).

    Under DDP (``parallel``: ``model`` is wrapped, ``loader`` is this process's shard) the processes agree on
    every step, the sums are added over all processes, and a per-batch scheduler steps once per batch of every
    process (``world_size()`` times per step), so that a schedule sized with ``len(train_loader)`` spans the
    training as in one process. ``compute`` is (precision, channels_last), resolved; ``scaler`` is 16-mixed's.
    """
    model.train()
    step, scheduler_steps = (_agreed_step, ddp.world_size()) if parallel else (_step_or_skip, 1)
    # Sums stay on the device: no extra synchronisation per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    for batch_index, batch in enumerate(loader):
        images, targets = _to_device(batch, device)
        try:
            done = step(model, amp.images_in(images, compute[1]), targets, optimizer, loss_fn, ignore_index,
                        compute[0], scaler)
        except FloatingPointError as error:
            raise FloatingPointError(f"epoch {epoch + 1}, batch {batch_index + 1}: {error}") from None
        if done is None:
            continue
        loss_value, logits = done
        if scheduler_per_batch is not None:
            for _ in range(scheduler_steps):
                scheduler_per_batch.step()
        n = _count_valid(targets, ignore_index)
        loss_sum += loss_value * n.double()
        count += n
        if logits is not None:
            correct += _count_correct(logits.detach(), targets, ignore_index)
    if parallel:
        for total in (loss_sum, correct, count):
            ddp.all_reduce(total)
    count = int(count)
    if count == 0:
        raise ValueError("the training loader yielded no valid targets; check the dataset and the batch size.")
    return float(loss_sum) / count, (int(correct) / count if loss_fn is not None else None)


def _is_better(score: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return score < best if monitor == "loss" else score > best


def _epoch_scalars(history: History) -> dict[str, float | None]:
    """The last epoch of ``history`` as a logger's tags -> values (``None``: not measured in this run)."""
    def last(values: list[float]) -> float | None:
        return values[-1] if values else None
    return {"loss/train": last(history.train_loss), "accuracy/train": last(history.train_accuracy),
            "loss/val": last(history.val_loss), "accuracy/val": last(history.val_accuracy),
            "miou/val": last(history.val_miou), "lr": last(history.lr)}


def fit(model: torch.nn.Module, train_loader, optimizer: torch.optim.Optimizer, loss_fn=None, epochs: int = 1,
        val_loader=None, num_classes: int | None = None, scheduler=None, scheduler_interval: str = "epoch",
        checkpoint_path: str | os.PathLike | None = None, monitor: str = "accuracy", restore_best: bool = False,
        device: torch.device | str | None = None, ignore_index: int | None = 255, desc: str | None = None,
        verbose: bool = True, distributed: str | None = "auto", precision: str = "auto",
        channels_last: bool | None = None, logger=None) -> History:
    """Train ``model`` for ``epochs`` epochs, evaluating after each one.

    Started by ``torchrun`` as one of several processes, ``fit`` trains one model on all of them with
    ``DistributedDataParallel`` (see ``coursekit.distributed``; the calling code stays as it is): each process
    trains on its share of ``train_loader``'s batches (``batch_size`` is per process; the step of W processes
    sees the W·B images of W consecutive batches, as one process with batch size W·B would, and the last
    ``len(train_loader) % W`` batches of each epoch are left out so that all processes take as many steps),
    DDP averages the gradients, and the training loss and accuracy are those of all processes' batches. Each
    process evaluates its share of ``val_loader``'s batches and the counts are added up, so every process gets
    the scores of the whole validation set. Rank 0's batch-norm statistics are copied to all processes after
    each epoch (DDP would at the next batch; batch norm normalises with each process's own batch). Only rank 0
    shows progress, prints and saves checkpoints (of ``model`` itself, which load in one process); every
    process returns the same ``History`` and ends with the same weights.

    Args:
        model: the network; moved to ``device`` once.
        train_loader: yields ``(images, targets)``: float32 ``N×C×H×W`` and
            int64 ``N`` (classification) or ``N×H×W`` (segmentation).
        optimizer: built on ``model.parameters()``.
        loss_fn: ``loss_fn(logits, targets)`` -> scalar; ``None`` when the
            model returns its own loss from ``model(images, targets)``.
        epochs: passes over ``train_loader``.
        val_loader: evaluated after every epoch with ``evaluate`` (optional).
        num_classes: K for the validation confusion matrix (``None``: from the logits).
        scheduler: optional LR scheduler. ``ReduceLROnPlateau`` is stepped
            once per epoch with the monitored validation metric (training
            loss without ``val_loader``); any other scheduler once per epoch,
            or once per batch with ``scheduler_interval='batch'`` (OneCycleLR).
        checkpoint_path: where to save the best model so far (see ``save_checkpoint``).
        monitor: validation metric that decides the best epoch: ``'accuracy'``,
            ``'miou'`` (higher is better) or ``'loss'`` (lower is better).
            Without ``val_loader`` the last epoch counts as the best.
        restore_best: load the best epoch's weights into ``model`` at the end.
        device: ``None`` is ``config.get_device()``.
        ignore_index: target value to skip (255 = VOC void); ``None`` skips nothing.
        desc: label of the progress bar.
        verbose: print one rounded line per epoch.
        distributed: ``'auto'``: with DDP exactly when torchrun started this process as one of several
            (``distributed.launched()``), in this process alone otherwise (exactly as without DDP); ``'ddp'``:
            always with DDP (an error when not so started); ``None`` or ``'none'``: in this process alone.
        precision: ``'32'``, ``'bf16'`` (autocast; weights, loss and steps stay float32), ``'16-mixed'``
            (float16 autocast with a gradient scaler, CUDA only) or ``'auto'``: float32 in the ``ci`` profile,
            else the device's fastest that keeps the maths (``coursekit.precision.default_precision``).
            Validation runs in the same precision.
        channels_last: keep the images and the model's 4-D weights in channels_last memory while training
            (the weights are contiguous again afterwards); ``None``: off in ``ci``, on for convolutional
            networks on CPU and CUDA otherwise (``coursekit.precision.resolve_channels_last``).
        logger: optional; after every epoch ``logger.log_epoch(epoch, scalars, model)`` gets the epoch's
            ``loss/train``, ``accuracy/train``, ``loss/val``, ``accuracy/val``, ``miou/val`` and ``lr`` (``None``
            where not measured) and the model in its training memory format (see
            ``coursekit.tensorboard.TensorBoardLogger``). Only the process that prints calls it.

    Returns:
        The ``History`` of per-epoch losses, accuracies and learning rates.

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
        RuntimeError: ``distributed='ddp'`` in a process that torchrun did not start as one of several.
        ValueError: an unknown ``monitor``, ``scheduler_interval`` or ``precision``, or ``epochs`` below 1.
    """
    if monitor not in MONITORS:
        raise ValueError(f"monitor={monitor!r} is not supported; use one of {', '.join(MONITORS)}.")
    if scheduler_interval not in ("epoch", "batch"):
        raise ValueError(f"scheduler_interval={scheduler_interval!r}; use 'epoch' or 'batch'.")
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and scheduler_interval == "batch":
        raise ValueError("ReduceLROnPlateau needs a metric, so it is stepped per epoch; use scheduler_interval='epoch'.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    parallel = ddp.use_ddp(distributed)
    device = ddp.setup(_resolve(device)) if parallel else _resolve(device)
    compute = (amp.resolve_precision(precision, device), amp.resolve_channels_last(channels_last, model, device))
    model.to(device)
    with amp.memory_format(model, compute[1]):
        return _fit(model, train_loader, optimizer, loss_fn, epochs, val_loader, num_classes, scheduler,
                    scheduler_interval, checkpoint_path, monitor, restore_best, device, ignore_index, desc, verbose,
                    parallel, compute, logger)


def _fit(model, train_loader, optimizer, loss_fn, epochs, val_loader, num_classes, scheduler, scheduler_interval,
         checkpoint_path, monitor, restore_best, device, ignore_index, desc, verbose, parallel: bool,
         compute: tuple[str, bool], logger) -> History:
    """``fit``'s epoch loop, its arguments checked and resolved: ``model`` on ``device`` in ``compute``'s
    memory format, ``parallel`` whether DDP trains it, ``compute`` = (precision, channels_last)."""
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    network, val_batches, validate = model, val_loader, _evaluate_here
    if parallel:
        network, train_loader = ddp.data_parallel(model, device), ddp.shard_loader(train_loader)
        val_batches = None if val_loader is None else ddp.shard_loader(val_loader, equal=False)
        validate = _evaluate_shards
    main = not parallel or ddp.is_main()  # the process that shows progress, prints and saves
    history = History(monitor=monitor, precision=compute[0], channels_last=compute[1])
    scaler = amp.grad_scaler(compute[0], device)
    if verbose and main and compute != ("32", False):
        tqdm.write(f"computing in precision {compute[0]}" + (", channels_last" if compute[1] else ""))
    best_state = None
    per_batch = scheduler if scheduler_interval == "batch" else None
    bar = tqdm(range(epochs), desc=desc or "epochs", unit="epoch", leave=True, disable=not main)
    for epoch in bar:
        history.lr.append(_current_lr(optimizer))
        train_loss, train_accuracy = _train_one_epoch(network, train_loader, optimizer, loss_fn, device,
                                                      ignore_index, epoch, per_batch, parallel, compute, scaler)
        if parallel:
            ddp.broadcast_buffers(model)
        history.train_loss.append(train_loss)
        if train_accuracy is not None:
            history.train_accuracy.append(train_accuracy)
        line = {"loss": train_loss}
        score = None
        if val_loader is not None:
            scores = validate(model, val_batches, num_classes, loss_fn, device, ignore_index, compute)
            history.val_loss.append(scores["loss"])
            history.val_accuracy.append(scores["accuracy"])
            history.val_miou.append(scores["miou"])
            score = scores[monitor]
            line["val_loss"] = scores["loss"]
            if monitor != "loss":
                line[f"val_{monitor}"] = score
        if plateau:
            scheduler.step(train_loss if score is None else score)
        elif scheduler is not None and per_batch is None:
            scheduler.step()
        if score is None or _is_better(score, history.best_score, monitor):
            history.best_epoch, history.best_score = epoch, score
            if restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint_path is not None and main:
                save_checkpoint(checkpoint_path, model, optimizer, epoch=epoch, history=history.to_dict())
        if logger is not None and main:
            logger.log_epoch(epoch, _epoch_scalars(history), model)
        bar.set_postfix({k: f"{v:.3f}" for k, v in line.items()})
        if verbose and main:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.3f}" for k, v in line.items()))
    bar.close()
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    if parallel:
        ddp.wait_for_all(device)  # rank 0's last checkpoint is written before any process goes on
    return history


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or that does not fit the model or optimizer it is loaded into."""


_KEY_TYPES = (str, int, float, bool, type(None))
_PLAIN_TYPES = (*_KEY_TYPES, torch.Tensor, torch.nn.Parameter)
_NUMPY_SCALARS = ((np.bool_, bool), (np.integer, int), (np.floating, float), (np.str_, str))


def _unstorable(where: str, what: str) -> TypeError:
    """The error for an extra that ``torch.load(weights_only=True)`` could not read back."""
    return TypeError(f"extra {where!r} is {what}, which load_checkpoint cannot read back; store numbers, strings, "
                     "lists, tuples, dicts, tensors or NumPy arrays instead.")


def _array_to_tensor(array: np.ndarray, where: str) -> torch.Tensor:
    """A NumPy array as a tensor holding a copy of its data.

    Args:
        array: of a dtype that torch has (bool, integers, floats, complex).
        where: the array's key path among the extras, for the error message.

    Raises:
        TypeError: torch has no such dtype (strings, objects, records, long double, dates), or
            ``array`` is a masked array.
    """
    if isinstance(array, np.ma.MaskedArray):
        raise _unstorable(where, "a NumPy masked array")  # a tensor would silently drop the mask
    # A native-order, C-ordered copy: torch.from_numpy refuses other byte orders and negative strides.
    native = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")
    try:
        return torch.from_numpy(native)
    except TypeError:
        raise _unstorable(where, f"a NumPy array of dtype {array.dtype}") from None


def _plain(value, where: str, enclosing: frozenset = frozenset()):
    """``value`` made of types that ``torch.load(weights_only=True)`` reads.

    Args:
        value: an extra of ``save_checkpoint``, or a part of one.
        where: its key path among the extras, e.g. ``'metrics.confusion'``, for error messages.
        enclosing: ``id``s of the containers ``value`` lies in, to refuse one that contains itself.

    Returns:
        ``value`` with NumPy scalars as Python bools, ints, floats or strings, NumPy arrays as tensors,
        paths as strings, a ``History`` as its ``to_dict()``, tuples, lists and dicts (and their
        subclasses) as plain ones converted item by item; strings, numbers, ``None`` and tensors as they are.

    Raises:
        TypeError: ``value`` holds anything else (sets, bytes, complex numbers, objects, ...), or contains itself.
    """
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor)  # subclasses (torchvision's tv_tensors, ...) are not on the allow-list
    for numpy_type, python_type in _NUMPY_SCALARS:
        if isinstance(value, numpy_type):
            return python_type(value)
    if isinstance(value, np.ndarray):
        return _array_to_tensor(value, where)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, History):
        return _plain(value.to_dict(), where)
    if isinstance(value, (tuple, list, dict)):
        if id(value) in enclosing:
            raise _unstorable(where, "a container that contains itself")
        inside = enclosing | {id(value)}
        if isinstance(value, dict):
            return {_plain_key(key, where): _plain(item, f"{where}.{key}", inside) for key, item in value.items()}
        items = [_plain(item, f"{where}[{index}]", inside) for index, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise _unstorable(where, f"of type {type(value).__name__}")


def _plain_key(key, where: str) -> str | int | float | bool | None:
    """A dict key among the extras as a plain string, number or ``None`` (NumPy scalars and paths converted).

    Raises:
        TypeError: the key is of another type (a tuple, a tensor, an object, ...).
    """
    plain = _plain(key, where) if isinstance(key, (np.generic, PurePath)) else key
    if type(plain) not in _KEY_TYPES:
        raise TypeError(f"extra {where!r} has the key {key!r} of type {type(key).__name__}, which "
                        "load_checkpoint cannot read back; use strings or numbers as keys.")
    return plain


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    **extra) -> Path:
    """Save the model's (and optimizer's) state to ``path`` atomically.

    The file is written to a temporary name in the same folder and then
    renamed over ``path``, so ``path`` holds either the old or the new
    checkpoint, never a half-written one. Temporary files that killed saves
    to ``path`` left behind over an hour ago are removed. The file gets the
    mode of any new file (``0o666 & ~umask``).

    Args:
        path: the checkpoint file; its folder is created if needed.
        model: whose ``state_dict()`` is saved.
        optimizer: whose ``state_dict()`` is saved too (to resume training).
        extra: more things to store (epoch, history, metrics, ...): strings,
            numbers, ``None``, tensors, NumPy scalars and arrays, paths, a
            ``History``, and tuples, lists and dicts of these. They are stored
            as plain types that ``load_checkpoint`` reads back with
            ``weights_only=True``: NumPy scalars as Python numbers, arrays as
            tensors, paths as strings, a ``History`` as its ``to_dict()``.

    Returns:
        The checkpoint's path.

    Raises:
        TypeError: an extra holds another type; nothing is written.
        OSError: the folder is not writable or the disk is full; ``path`` is as before.
    """
    path = Path(path)
    extras = {name: _plain(value, name) for name, value in extra.items()}
    payload = {"model": model.state_dict(), **extras}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    return tempfiles.write_atomically(path, lambda file: torch.save(payload, file))


def _unreadable(path: Path) -> CheckpointError:
    """The error for a file that holds no checkpoint ``load_checkpoint`` can read."""
    return CheckpointError(f"{path} is not a readable coursekit checkpoint (it is truncated, corrupt, or was not "
                           "written by engine.save_checkpoint); delete it and train and save the model again.")


def _read_checkpoint(path: Path) -> dict:
    """The dict in a checkpoint file, read onto the CPU with ``torch.load(weights_only=True)``.

    Returns:
        A dict with the ``'model'`` state dict, maybe ``'optimizer'`` state and the extras.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is empty, truncated, corrupt, holds objects outside the
            ``weights_only`` allow-list, or holds no dict with a ``'model'`` state dict.
        OSError: the file may not be opened (permissions).
        MemoryError: there is not enough memory for it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train and save one first (engine.save_checkpoint).")
    # Opened here, so that only the file's content is blamed below: torch raises OSError for some corrupt zips.
    with path.open("rb") as file:
        try:
            payload = torch.load(file, map_location="cpu", weights_only=True)
        except MemoryError:
            raise
        except Exception:
            # torch's own messages (EOFError, zip and unpickling errors) would even suggest weights_only=False,
            # which runs code from the file.
            raise _unreadable(path) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise _unreadable(path)
    return payload


def _some(names: list[str], limit: int = 3) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _describe_shape(value) -> str:
    """A state dict entry's shape, e.g. ``(3, 16)``, or what it is if it is not a tensor."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _fits(saved, current) -> bool:
    """Whether the file's state dict entry ``saved`` can be loaded into the model's entry ``current``."""
    if not isinstance(current, torch.Tensor) or torch.nn.parameter.is_lazy(current):
        return True  # extra state takes any object; a lazy parameter takes its shape from the file
    return isinstance(saved, torch.Tensor) and saved.shape == current.shape


def _check_model_state(path: Path, state: dict, model: torch.nn.Module) -> None:
    """Check that ``state`` has exactly the keys of ``model.state_dict()``, with tensors of the same shapes.

    Raises:
        CheckpointError: keys are missing or unexpected, or shapes differ; a few of each are named.
    """
    expected = model.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    mismatched = [f"{name} {_describe_shape(state[name])} in the file, {_describe_shape(value)} in the model"
                  for name, value in expected.items() if name in state and not _fits(state[name], value)]
    problems = [f"{label} {_some(names)}" for label, names in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if names]
    if problems:
        raise CheckpointError(f"{path} does not fit this model ({'; '.join(problems)}); load it into the model "
                              "it was saved from, or delete it and train and save again.")


def _check_optimizer_state(path: Path, state, optimizer: torch.optim.Optimizer) -> None:
    """Check that ``state`` is optimizer state whose parameter groups match ``optimizer``'s in count and sizes.

    Args:
        state: what the file holds under ``'optimizer'``; ``None`` where it holds nothing.
        optimizer: the optimizer it is for.

    Raises:
        CheckpointError: ``state`` is missing, malformed, or its groups differ.
    """
    if state is None:
        raise CheckpointError(f"{path} holds no optimizer state; load it without an optimizer "
                              "(engine.load_checkpoint(path, model)).")
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (isinstance(groups, list) and isinstance(state.get("state"), dict)
            and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups)):
        raise _unreadable(path)
    saved = [len(group["params"]) for group in groups]
    current = [len(group["params"]) for group in optimizer.param_groups]
    if saved != current:
        raise CheckpointError(f"{path} holds optimizer state for parameter groups of sizes {saved}, but this "
                              f"optimizer's have {current}; build the optimizer as it was when saved, or load "
                              "the checkpoint without it.")


def _load_optimizer_state(path: Path, state: dict, optimizer: torch.optim.Optimizer) -> None:
    """Load ``state`` (already checked by ``_check_optimizer_state``) into ``optimizer``.

    Raises:
        CheckpointError: ``optimizer`` rejects the state (e.g. SGD state given to Adam); it is put back as before.
    """
    previous = optimizer.state_dict()
    try:
        optimizer.load_state_dict(state)
    except Exception:
        optimizer.load_state_dict(previous)  # a failed load_state_dict has already replaced part of the state
        raise CheckpointError(f"{path} holds optimizer state that this {type(optimizer).__name__} cannot take "
                              "(it was saved from another kind of optimizer); build the optimizer it was saved "
                              "with, or load the checkpoint without it.") from None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load a checkpoint written by ``save_checkpoint`` into ``model`` (and ``optimizer``).

    The file is read with ``torch.load(weights_only=True)``: tensors and plain
    data only, no arbitrary code. Everything is checked before anything is
    loaded (and an optimizer that rejects the state is put back), so on any
    error ``model`` and ``optimizer`` are unchanged.

    Args:
        path: the checkpoint file.
        model: receives the weights; its state dict must have the file's keys and shapes exactly.
        optimizer: receives the optimizer state, whose parameter groups must match in count and sizes;
            ``None`` ignores any optimizer state in the file.

    Returns:
        The extras stored with the checkpoint (e.g. ``epoch``, ``history``).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file is not a readable checkpoint, does not fit ``model``, or holds no
            optimizer state that fits ``optimizer``.
    """
    path = Path(path)
    payload = _read_checkpoint(path)
    _check_model_state(path, payload["model"], model)
    optimizer_state = payload.pop("optimizer", None)
    if optimizer is not None:
        _check_optimizer_state(path, optimizer_state, optimizer)
        _load_optimizer_state(path, optimizer_state, optimizer)  # before the model: it is the part that can still fail
    model.load_state_dict(payload.pop("model"))
    return payload
