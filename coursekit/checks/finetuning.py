"""Checks for notebook 06 (fine-tuning DeepLabv3 for flower segmentation).

One check per exercise:

* ``check_finetune_model(model_class)``      the fine-tuning model: every loaded layer frozen, a new
  ``Conv2d(256, k, 1)`` as ``classifier[4]``, no auxiliary head, frozen batch norm kept in eval mode
  (one training step changes only the new layer and no batch-norm statistic);
* ``check_trainable_parameters(fn)``         the parameters handed to the optimiser: exactly the model's
  own parameters that require gradients;
* ``check_soft_iou(loss_fn)``                the soft IoU loss against ``coursekit.losses.soft_iou_loss``:
  value and gradient, soft probabilities, the ``-X·Y`` term, ignored pixels.

The probe networks are torchvision ``DeepLabV3`` models with its own heads and a small random backbone
(no file is read); inputs come from local generators and the global random state is restored afterwards, so a check
never changes the notebook's random stream.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops.misc import Conv2dNormActivation

from ..losses import soft_iou_loss
from ..models import finetune
from .report import call_student, expect, expect_close, fail, keeps_random_state, passed

VOID = 255
HEAD_WIDTH = 256  # input channels of DeepLabHead's last layer, classifier[4]
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def _probe_deeplab(seed: int = 0) -> DeepLabV3:
    """A small torchvision ``DeepLabV3`` laid out as ``load_deeplabv3``'s: a backbone returning ``"out"`` and
    ``"aux"`` features, ``DeepLabHead`` (ASPP, 3×3 conv, batch norm, ReLU, ``classifier[4]`` =
    ``Conv2d(256, 21, 1)``) and an ``FCNHead`` as ``aux_classifier``; randomly initialised from ``seed``, in
    training mode, on the CPU. Only the backbone is smaller (three strided convolutions), so checks run fast.

    Its batch-norm statistics are those of a batch of random images (float32 4×3×48×48), as pretrained
    statistics would be of real ones.
    """
    torch.manual_seed(seed)
    trunk = nn.Sequential(OrderedDict(stem=Conv2dNormActivation(3, 16, stride=2),
                                      low=Conv2dNormActivation(16, 24, stride=2),
                                      high=Conv2dNormActivation(24, 40, stride=2)))
    backbone = IntermediateLayerGetter(trunk, return_layers={"high": "out", "low": "aux"})
    model = DeepLabV3(backbone, DeepLabHead(40, 21), FCNHead(24, 21))
    layers = [layer for layer in model.modules() if isinstance(layer, _BATCH_NORM)]
    for layer in layers:
        layer.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 48, 48))
    for layer in layers:
        layer.momentum = 0.1
    return model


def _probe_batch(seed: int, num_classes: int, n: int = 2, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 n×3×size×size and targets int64 n×size×size in [0, num_classes) with some 255."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator)
    targets = torch.randint(0, num_classes, (n, size, size), generator=generator)
    targets[torch.rand(n, size, size, generator=generator) < 0.1] = VOID
    return images, targets


def _batch_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every batch-norm buffer (running mean, variance, batch count) of ``model``, by name."""
    return {f"{name}.{key}": buffer.clone() for name, layer in model.named_modules() if isinstance(layer, _BATCH_NORM)
            for key, buffer in layer.named_buffers(recurse=False)}


# ---------------------------------------------------------------- the fine-tuning model

_MODEL_HINT = ("freeze every parameter of the loaded network (requires_grad_(False)) first, then replace "
               "classifier[4] by nn.Conv2d(256, num_classes, kernel_size=1), set aux_classifier to None, and "
               "return the network's output dict from forward.")
_BN_HINT = ("engine.fit calls model.train() at every epoch, which puts every batch-norm layer back in train mode; "
            "override train(mode=True): call super().train(mode), then put each nn.BatchNorm2d back in eval mode "
            "(layer.eval()) so it keeps its pretrained running statistics, and return self.")


def _build(model_class, deeplab: nn.Module, num_classes: int) -> nn.Module:
    model = call_student(f"{getattr(model_class, '__name__', 'your class')}(deeplab, {num_classes})", model_class, deeplab,
                  num_classes, hint=_MODEL_HINT)
    expect(isinstance(model, nn.Module), "your fine-tuning model must be an nn.Module", "a torch.nn.Module",
           type(model).__name__, "subclass nn.Module and call super().__init__() first.")
    return model


def _expect_frozen_but_head(model: nn.Module, loaded_ids: set[int], deeplab: nn.Module, num_classes: int) -> None:
    """The loaded layers are used and all frozen; the only trainable tensors are a new head's weight
    k×256×1×1 and bias k.

    Args:
        loaded_ids: ``id``s of the parameters of ``deeplab`` before the student's code ran.
    """
    own = {id(p) for p in model.parameters()}
    expect(all(id(p) in own for p in deeplab.backbone.parameters()), "your model does not use the network it was "
           "given", "the loaded network's layers inside your model", "other layers",
           "keep the network passed in (e.g. self.deeplab = deeplab) instead of building a new one.")
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    still = [name for name, p in trainable if id(p) in loaded_ids]
    if still:
        fail(f"a frozen layer still trains: {len(still)} loaded parameter(s) have requires_grad=True, e.g. "
             f"{', '.join(still[:3])}", "only the new classifier[4] trainable", f"{len(trainable)} trainable "
             "tensors", "call p.requires_grad_(False) for every p in deeplab.parameters() (all of them, the head's "
             "ASPP and batch norm included) before replacing classifier[4]; the loaded 21-class classifier[4] is "
             "replaced, not trained.")
    expected = sorted([(num_classes,), (num_classes, HEAD_WIDTH, 1, 1)])
    expect(trainable, "nothing in your model trains", f"the new last layer's weight and bias {expected}",
           "every parameter with requires_grad=False", "freeze the loaded layers first, then create the new "
           "classifier[4]: a new nn.Conv2d has requires_grad=True.")
    shapes = sorted(tuple(p.shape) for _, p in trainable)
    expect(shapes == expected, "wrong shape of the new last layer", f"weight and bias shapes {expected}", shapes,
           f"classifier[4] = nn.Conv2d(256, num_classes, kernel_size=1) with a bias: 256 is the width of the "
           f"layer it replaces, num_classes = {num_classes} here (do not hard-code 2).")


def _expect_train_mode(model: nn.Module) -> None:
    """``model.train()`` returns the model in training mode with every (frozen) batch-norm layer in eval mode."""
    result = call_student("your model's train()", model.train, hint=_BN_HINT)
    expect(result is model, "train() must return the model itself", "self", type(result).__name__,
           "end your train() override with `return self`, as nn.Module.train does.")
    expect(model.training, "after model.train() your model is not in training mode", "model.training == True",
           model.training, "call super().train(mode) in your override.")
    in_train_mode = [name for name, layer in model.named_modules() if isinstance(layer, _BATCH_NORM) and layer.training]
    expect(not in_train_mode, f"batch norm left in train mode: after model.train() {len(in_train_mode)} frozen "
           f"batch-norm layer(s) are in train mode, e.g. {', '.join(in_train_mode[:2])}; a training step would "
           "overwrite their running statistics", "every frozen batch-norm layer in eval mode",
           f"{len(in_train_mode)} in train mode", _BN_HINT)


def _expect_output(model: nn.Module, images: torch.Tensor, num_classes: int) -> None:
    """The output in train mode is ``{"out": N×k×H×W}`` and nothing else (no auxiliary head)."""
    with torch.no_grad():
        out = call_student("your model's forward", model, images, hint=_MODEL_HINT)
    expect(isinstance(out, dict) and "out" in out, "your model must return torchvision's output dict",
           "{'out': logits}", type(out).__name__, "return the wrapped DeepLabV3's output as it is.")
    expect(set(out) == {"out"}, "the auxiliary head is still there", "only the key 'out'", sorted(out),
           "set deeplab.aux_classifier = None: it scores the 21 VOC classes, is not trained here and costs time.")
    shape = (images.shape[0], num_classes, *images.shape[2:])
    expect(tuple(out["out"].shape) == shape, "the shape of your model's logits", shape, tuple(out["out"].shape),
           "replace classifier[4] (the last layer) itself; the output is then upsampled to the input size.")


def _expect_one_step_trains_only_the_head(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> None:
    """One SGD step in training mode changes the new head and no batch-norm buffer."""
    before, head = _batch_norm_state(model), [p.detach().clone() for p in finetune.trainable_parameters(model)]
    optimizer = torch.optim.SGD(finetune.trainable_parameters(model), lr=0.1)
    loss = F.cross_entropy(model(images)["out"], targets, ignore_index=VOID)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = [name for name, value in _batch_norm_state(model).items() if not torch.equal(value, before[name])]
    expect(not changed, f"batch norm left in train mode: one training step changed {len(changed)} running "
           f"statistic(s), e.g. {', '.join(changed[:2])}", "frozen batch norm keeps its statistics",
           "statistics overwritten by the training batch", _BN_HINT)
    moved = [not torch.equal(old, p) for old, p in zip(head, finetune.trainable_parameters(model))]
    expect(all(moved), "one training step did not change the new last layer", "new weights and bias",
           "unchanged", "the new classifier[4] must be part of the forward pass and require gradients.")


@keeps_random_state
def check_finetune_model(model_class) -> None:
    """Check ``model_class(deeplab, num_classes)``: torchvision's DeepLabv3 prepared for fine-tuning.

    The model must keep the network it is given with every parameter frozen, replace
    ``classifier[4]`` by a new ``Conv2d(256, num_classes, 1)``, drop the auxiliary head, return
    ``{"out": logits float32 N×num_classes×H×W}`` for images float32 N×3×H×W, and keep its frozen
    batch-norm layers in eval mode after ``train()``: one SGD step changes the new layer only and
    leaves every batch-norm buffer as it was. Tried with 2 and 3 classes.
    """
    for num_classes in (2, 3):
        deeplab = _probe_deeplab(seed=num_classes)
        loaded_ids = {id(p) for p in deeplab.parameters()}
        loaded = {name: value.clone() for name, value in deeplab.backbone.state_dict().items()}
        model = _build(model_class, deeplab, num_classes)
        _expect_frozen_but_head(model, loaded_ids, deeplab, num_classes)
        state = deeplab.backbone.state_dict()
        changed = [name for name, value in state.items() if not torch.equal(value, loaded[name])]
        expect(not changed, "your model changed the loaded weights", "the backbone as loaded",
               f"{changed[:2]} changed", "only replace classifier[4]; do not re-initialise or modify the "
               "pretrained layers.")
        images, targets = _probe_batch(seed=10 + num_classes, num_classes=num_classes)
        _expect_train_mode(model)
        _expect_output(model, images, num_classes)
        _expect_one_step_trains_only_the_head(model, images, targets)
    passed("only the new Conv2d(256, k, 1) trains; the frozen batch norm keeps its statistics; no auxiliary head")


# ---------------------------------------------------------------- trainable parameters

_PARAMS_HINT = ("return [p for p in model.parameters() if p.requires_grad]: the model's own Parameter objects "
                "(no copies, no names), selected by requires_grad rather than by layer names.")


class _PartlyFrozen(nn.Module):
    """A small net whose trainable parameters lie in the middle: frozen conv, trainable norm and conv, frozen fc."""

    def __init__(self):
        super().__init__()
        self.stem = finetune.freeze(nn.Conv2d(3, 4, 3))
        self.norm = nn.BatchNorm2d(4)
        self.body = nn.Conv2d(4, 4, 1)
        self.fc = finetune.freeze(nn.Linear(4, 2))


def _as_parameter_list(got, what: str) -> list:
    expect(got is not None and not isinstance(got, (torch.Tensor, nn.Module, str)) and hasattr(got, "__iter__"),
           f"{what} must return the parameters to optimise", "a list of parameters", type(got).__name__,
           _PARAMS_HINT)
    items = list(got)
    if items and isinstance(items[0], tuple):
        fail(f"{what} returns (name, parameter) pairs", "the parameters themselves", "tuples", _PARAMS_HINT)
    expect(all(isinstance(p, torch.Tensor) for p in items), f"{what} must return tensors", "nn.Parameter objects",
           sorted({type(p).__name__ for p in items}), _PARAMS_HINT)
    return items


def _check_selection(fn, model: nn.Module, label: str) -> None:
    got = _as_parameter_list(call_student("trainable_parameters(model)", fn, model, hint=_PARAMS_HINT),
                             "trainable_parameters(model)")
    expected = [p for p in model.parameters() if p.requires_grad]
    own = {id(p) for p in model.parameters()}
    expect(all(id(p) in own for p in got), f"trainable_parameters returns tensors that are not {label}'s own "
           "parameters", "the Parameter objects of model.parameters()", "copies (e.g. .data, .detach(), .clone())",
           "an optimiser updates the tensors it is given; copies would train nothing in the model.")
    expect(len({id(p) for p in got}) == len(got), "trainable_parameters returns a parameter twice",
           "each parameter once", f"{len(got)} entries for {len({id(p) for p in got})} parameters", _PARAMS_HINT)
    frozen = [p for p in got if not p.requires_grad]
    expect(not frozen, f"trainable_parameters includes frozen parameters of {label}",
           f"{len(expected)} parameters with requires_grad=True", f"{len(got)}, {len(frozen)} of them frozen",
           "leave out every parameter with requires_grad=False: it gets no gradient, yet Adam would keep "
           "state for it and weight decay would still change it.")
    missing = len({id(p) for p in expected} - {id(p) for p in got})
    expect(not missing, f"trainable_parameters leaves out trainable parameters of {label}", len(expected),
           f"{len(got)} ({missing} missing)", _PARAMS_HINT)


@keeps_random_state
def check_trainable_parameters(fn) -> None:
    """Check ``fn(model)``: exactly the parameters of ``model`` with ``requires_grad=True``, no copies.

    Tried on a DeepLabv3 prepared for fine-tuning (two trainable tensors, the new head) and on a
    small net whose trainable parameters lie between frozen ones and that has no ``classifier``.
    """
    _check_selection(fn, finetune.prepare_for_finetuning(_probe_deeplab(seed=1), 2), "the fine-tuning model")
    torch.manual_seed(2)
    _check_selection(fn, _PartlyFrozen(), "a net whose trainable layers lie between frozen ones")
    passed("trainable_parameters gives exactly the parameters that require gradients")


# ---------------------------------------------------------------- soft IoU loss

_IOU_HINT = ("with X = softmax(logits, dim=1)[:, 1] (the flower probability) and Y = (targets == 1), summed over "
             "the counted pixels (targets != 255) of the whole batch: I = sum(X * Y), U = sum(X + Y - X * Y), "
             "loss = 1 - I / U.")


def _soft_iou_from(x: torch.Tensor, targets: torch.Tensor, counted: torch.Tensor, union_without_xy: bool = False
                   ) -> torch.Tensor:
    """``1 - ΣXY / Σ(X + Y - XY)`` over ``counted`` pixels (``union_without_xy``: the mistake ``Σ(X + Y)``)."""
    y = (targets == 1).to(x.dtype)
    x, y = x[counted], y[counted]
    union = (x + y).sum() if union_without_xy else (x + y - x * y).sum()
    return 1 - (x * y).sum() / union


def _mistakes(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, tuple[float, str]]:
    """Values typical wrong soft IoU losses give on ``logits``/``targets``, with what to say about each."""
    probs = torch.softmax(logits, dim=1)
    counted, everything = targets != VOID, torch.ones_like(targets, dtype=torch.bool)
    hard = (logits.argmax(dim=1) == 1).to(logits.dtype)
    per_image = torch.stack([_soft_iou_from(probs[i, 1], targets[i], counted[i]) for i in range(len(targets))])
    return {
        "uses hard labels (argmax) instead of probabilities": (
            float(_soft_iou_from(hard, targets, counted)),
            "X must be the soft probability softmax(logits, dim=1)[:, 1]: argmax has no gradient, so nothing trains."),
        "forgets the -X·Y term of the union": (
            float(_soft_iou_from(probs[:, 1], targets, counted, union_without_xy=True)),
            "U = sum(X + Y - X * Y): without -X·Y the overlap is counted twice and the loss never reaches 0."),
        "counts the ignored pixels (255)": (
            float(_soft_iou_from(probs[:, 1], targets, everything)),
            "leave out every pixel whose target is 255 from both sums (multiply by, or index with, targets != 255)."),
        "scores the background channel": (
            float(_soft_iou_from(probs[:, 0], targets, counted)),
            "X is the probability of the flower, channel 1 of the softmax."),
        "uses a sigmoid of one channel instead of the softmax over both": (
            float(_soft_iou_from(torch.sigmoid(logits[:, 1]), targets, counted)),
            "the two logits compete: X = softmax(logits, dim=1)[:, 1], which equals sigmoid(z1 - z0)."),
        "averages one IoU per image": (
            float(per_image.mean()),
            "sum I and U over all pixels of the whole batch, then take 1 - I / U once."),
    }


def _iou_batch(seed: int, n: int = 3, height: int = 7, width: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits float32 n×2×height×width and targets int64 n×height×width in {0, 1, 255}."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, 2, height, width, generator=generator)
    targets = (torch.rand(n, height, width, generator=generator) < 0.4).long()
    targets[0, :3] = 1  # images with very different flower shares make the per-image mean differ
    targets[torch.rand(n, height, width, generator=generator) < 0.2] = VOID
    return logits, targets


@keeps_random_state
def check_soft_iou(loss_fn) -> None:
    """Compare ``loss_fn(logits, targets)`` with ``coursekit.losses.soft_iou_loss``: value and gradient.

    Args:
        loss_fn: callable taking logits float32 N×2×H×W and targets int64 N×H×W (0 background,
            1 flower, 255 ignored) and returning the soft IoU loss of the flower class as a scalar tensor.
    """
    for seed in (20, 21):
        logits, targets = _iou_batch(seed)
        leaf = logits.clone().requires_grad_(True)
        loss = call_student("your soft IoU loss", loss_fn, leaf, targets.clone(), hint=_IOU_HINT)
        expect(isinstance(loss, torch.Tensor) and loss.numel() == 1, "your soft IoU loss must return a scalar "
               "tensor", "a 0-d torch tensor", f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}",
               "return 1 - I / U as a tensor (no .item(), no NumPy), so it can be backpropagated.")
        expected_leaf = logits.clone().requires_grad_(True)
        expected = soft_iou_loss(expected_leaf, targets)
        value = float(loss.detach())
        if not math.isclose(value, float(expected.detach()), rel_tol=1e-4, abs_tol=1e-5):
            for mistake, (wrong, hint) in _mistakes(logits, targets).items():
                if math.isclose(value, wrong, rel_tol=1e-4, abs_tol=1e-5):
                    fail(f"your soft IoU loss {mistake}", float(expected.detach()), value, hint)
        expect_close("your soft IoU loss", expected, loss.detach(), _IOU_HINT, rtol=1e-4, atol=1e-5)
        expect(loss.requires_grad, "your soft IoU loss must stay differentiable", "a loss with requires_grad=True",
               "a loss cut off from the logits", "compute it with torch operations on the softmax probabilities; "
               "avoid argmax, .item(), .detach(), .numpy() and torch.no_grad() inside the loss.")
        loss.backward()
        expected.backward()
        expect(leaf.grad is not None, "your soft IoU loss gives the logits no gradient", "a gradient", None, _IOU_HINT)
        expect_close("the gradient of your soft IoU loss", expected_leaf.grad, leaf.grad,
                     "ignored pixels must get zero gradient; use the softmax probabilities, not hard labels.",
                     rtol=1e-3, atol=1e-6)
    passed("soft IoU loss matches coursekit.losses.soft_iou_loss, value and gradient")
