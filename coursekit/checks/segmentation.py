"""Checks for notebook 04 (semantic segmentation with FCNs).

One check per exercise:

* ``check_cross_entropy(loss_fn)``   the student's per-pixel cross-entropy
  against ``nn.CrossEntropyLoss(ignore_index=255)``: value, gradient, void
  pixels, and large logits (no overflow);
* ``check_miou(miou_fn)``            the metric call: label maps, void as -1,
  the caller's tensors left untouched;
* ``check_output_shape(model, k)``   a segmentation network keeps the input's
  height and width (odd sizes included) and scores ``k`` classes;
* ``check_fcn32s(cls)``, ``check_fcn8s(cls)``  a student's FCN forward pass
  against the reference on the same layers with random score weights; a
  wrong crop offset, a missing skip or a skip that never reaches the output
  fails with a message that names it;
* ``check_decoder(cls)``            the encoder-decoder's decoder against the
  reference on the same random weights; names a concatenation on the wrong
  axis or in the wrong order, nearest or corner-aligned upsampling and an
  unused layer;
* ``check_optimizer(make_optimizer)`` Adam at the given rate over exactly the
  trainable parameters;
* ``check_train_epoch(fn)``          one epoch of the training loop against
  the reference: train mode, zero_grad per batch, the mean loss returned;
* ``check_validation(validate_fn)``  the validation loop: batched, in eval
  mode, without autograd, and the mIoU of the whole set (equal to
  ``engine.evaluate``'s) rather than a mean of per-batch values.

Inputs are made with local generators and the global random state is
restored afterwards, so a check never changes the notebook's random stream.
"""
from __future__ import annotations

import functools
import math
import numbers
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import config, engine
from ..metrics import ConfusionMatrix, eval_semantic_segmentation
from ..models.encoder_decoder import ResNetEncoderDecoder, _out_channels
from ..models.fcn import FCN8s, FCN32s, _crop
from .report import CheckFailed, call_student, expect, expect_close, expect_number, fail, keeps_random_state, passed

VOID = 255
# (N, H, W) of the random inputs of check_output_shape: odd sizes, so rounding in
# the down- and upsampling shows.
ODD_SIZES = ((2, 37, 53),)


def _segmentation_batch(seed: int, n: int, classes: int, height: int, width: int, scale: float = 3.0,
                        void_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits float32 n×classes×height×width and targets int64 n×height×width (void 255)."""
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, classes, height, width, generator=generator)
    targets = torch.randint(0, classes, (n, height, width), generator=generator)
    targets[torch.rand(n, height, width, generator=generator) < void_fraction] = VOID
    return logits, targets


# ---------------------------------------------------------------- cross-entropy

_CE_HINT = ("per pixel the loss is logsumexp(z) - z[y]; leave out pixels whose target is 255 "
            "(mask them before any indexing or one-hot encoding) and average over the pixels that count.")


def _student_loss(loss_fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's loss on a copy of ``logits`` that requires grad; returns (loss, that copy)."""
    logits = logits.clone().requires_grad_(True)
    loss = call_student("your cross-entropy", loss_fn, logits, targets.clone(), hint=_CE_HINT)
    expect(isinstance(loss, torch.Tensor) and loss.numel() == 1, "your cross-entropy must return a scalar tensor",
           "a 0-d torch tensor", f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}",
           "return the mean over the counted pixels as a tensor (no .item(), no NumPy), so it can be backpropagated.")
    expect(loss.requires_grad, "your cross-entropy must stay differentiable", "a loss with requires_grad=True",
           "a loss cut off from the logits", "compute it with torch operations on the logits; avoid .item(), "
           ".detach(), .numpy() and torch.no_grad() inside the loss.")
    return loss, logits


@keeps_random_state
def check_cross_entropy(loss_fn) -> None:
    """Compare ``loss_fn(logits, targets)`` with ``nn.CrossEntropyLoss(ignore_index=255)``.

    Args:
        loss_fn: callable taking logits float32 N×C×H×W and targets int64
            N×H×W (class ids, 255 = void) and returning the mean loss over
            non-void pixels as a scalar tensor.
    """
    reference = nn.CrossEntropyLoss(ignore_index=VOID)
    for scale, case in ((3.0, "random logits"), (1000.0, "large logits (about ±1000)")):
        logits, targets = _segmentation_batch(seed=4, n=2, classes=5, height=7, width=9, scale=scale)
        loss, leaf = _student_loss(loss_fn, logits, targets)
        value = float(loss.detach())
        expect(math.isfinite(value), f"your cross-entropy on {case} is not finite", "a finite number", value,
               "exp overflows for large logits: use log-softmax in the stable form "
               "z - max(z) - log(sum(exp(z - max(z)))), or torch.logsumexp.")
        expected_logits = logits.clone().requires_grad_(True)
        expected = reference(expected_logits, targets)
        counted, total = int((targets != VOID).sum()), targets.numel()
        if math.isclose(value, float(expected.detach()) * counted / total, rel_tol=1e-5):
            fail(f"your cross-entropy on {case} averages over every pixel", float(expected.detach()), value,
                 f"divide by the number of non-void pixels ({counted}), not by all pixels ({total}).")
        expect_close(f"your cross-entropy on {case}", expected, loss, _CE_HINT, rtol=1e-4, atol=1e-5)
        loss.backward()
        expected.backward()
        expect(leaf.grad is not None, "your cross-entropy gives the logits no gradient", "a gradient", None,
               _CE_HINT)
        expect_close(f"the gradient of your cross-entropy on {case}", expected_logits.grad, leaf.grad,
                     "void pixels must get zero gradient, and the mean must be over the counted pixels.",
                     rtol=1e-4, atol=1e-6)
    passed("cross-entropy matches nn.CrossEntropyLoss(ignore_index=255)")


# ---------------------------------------------------------------- the metric call

_MIOU_HINT = ("take labels with output.argmax(dim=1), move them and the targets to NumPy "
              "(.detach().cpu().numpy(), and .copy() the targets before editing), set void pixels (255) "
              "to -1, then call eval_semantic_segmentation(predictions, targets)['miou'].")


@keeps_random_state
def check_miou(miou_fn) -> None:
    """Check ``miou_fn(output, targets)``: the mIoU of a batch via ``eval_semantic_segmentation``.

    Args:
        miou_fn: callable taking the network's output, logits float32
            N×C×H×W (on the kit's device, requiring grad), and targets int64
            N×H×W with 255 = void, and returning the mIoU as a float.
    """
    device = config.get_device()
    logits, targets = _segmentation_batch(seed=5, n=3, classes=6, height=11, width=13)
    logits = logits.to(device).requires_grad_(True)
    targets = targets.to(device)
    kept = targets.clone()
    got = call_student("your mIoU function", miou_fn, logits, targets, hint=_MIOU_HINT)
    expect(torch.equal(targets, kept), "your mIoU function changed the targets it was given",
           "the targets unchanged (void still 255)", "void pixels rewritten",
           ".cpu().numpy() of a CPU tensor shares its memory: take .copy() of the array before setting 255 to -1.")
    got = expect_number("your mIoU function must return a number", got, "a float",
                        "return eval_semantic_segmentation(...)['miou'].")
    matrix = ConfusionMatrix(logits.shape[1], ignore_index=VOID)
    matrix.update(logits.argmax(dim=1), targets)
    expected = matrix.compute()["miou"]
    labels = logits.argmax(dim=1).cpu().numpy()
    void_as_class = eval_semantic_segmentation(labels, targets.cpu().numpy())["miou"]
    if math.isclose(float(got), void_as_class, rel_tol=1e-9):
        fail("your mIoU counts void pixels as a class", expected, float(got),
             "eval_semantic_segmentation ignores negative labels only: set targets == 255 to -1 first.")
    expect(math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-12), "your mIoU of the batch",
           expected, float(got), _MIOU_HINT + " Call it once for the whole batch (not once per image).")
    passed("mIoU computed with eval_semantic_segmentation")


# ---------------------------------------------------------------- output shape

@keeps_random_state
def check_output_shape(model: nn.Module, num_classes: int, sizes=ODD_SIZES) -> None:
    """Check that ``model`` maps images N×3×H×W to logits N×num_classes×H×W.

    The model runs once per size in ``sizes`` (``(N, H, W)`` triples; odd by
    default) in eval mode without autograd, on the kit's device; its mode is
    restored afterwards.
    """
    device = config.get_device()
    was_training = model.training
    model.to(device).eval()
    generator = torch.Generator().manual_seed(6)
    try:
        for n, height, width in sizes:
            images = torch.randn(n, 3, height, width, generator=generator).to(device)
            with torch.inference_mode():
                out = call_student("your network", model, images,
                            hint="run the network on a small batch yourself and print the shape after each layer.")
            expect(isinstance(out, torch.Tensor), "your network must return a tensor of logits", "a tensor",
                   type(out).__name__, "return the score map itself (N×C×H×W).")
            expected = (n, num_classes, height, width)
            expect(tuple(out.shape) == expected, f"the network's output for input {(n, 3, height, width)}",
                   expected, tuple(out.shape),
                   "the output must keep the batch size, have one channel per class and the input's height and "
                   "width: upsample to the input's exact size (e.g. F.interpolate(x, size=images.shape[-2:]) or a "
                   "crop of a transposed convolution's output), not by a fixed factor.")
            expect(out.is_floating_point(), "the network's output must be float logits", "a float tensor",
                   out.dtype, "return the scores before arg-max; the loss needs them.")
    finally:
        model.train(was_training)
    passed(f"network output is N×{num_classes}×H×W for inputs of odd size")


# ---------------------------------------------------------------- FCN forward passes

# The FCN checks run narrow networks (1/8 of VGG16's channels) on one odd-sized image: fast, and every crop shows.
_FCN_WIDTH = 0.125
_FCN_CLASSES = 5
_FCN_INPUT = (1, 3, 37, 53)
_FCN_HINT = ("follow the order of the figure: trunk -> score_fr -> upscore2 (1/16) + cropped score_pool4 -> "
             "upscore_pool4 (1/8) + cropped score_pool3 -> upscore8 -> crop to the input; the sums need maps of "
             "equal size, so pool4's scores join at 1/16 and pool3's at 1/8.")


def _fcn32s_variant(model: FCN32s, x: torch.Tensor, final: int = 19) -> torch.Tensor:
    """FCN-32s's forward with the final crop taken at ``final``: logits float32 N×C×H×W."""
    _, _, fc7 = model.trunk(x)
    return _crop(model.upscore(model.score_fr(fc7)), final, x.shape[-2:])


def _fcn8s_variant(model: FCN8s, x: torch.Tensor, pool4: int | None = 5, pool3: int | None = 9,
                   final: int = 31) -> torch.Tensor:
    """FCN-8s's forward with other crop offsets (``None``: that skip left out): logits float32 N×C×H×W."""
    pool3_features, pool4_features, fc7 = model.trunk(x)
    h = model.upscore2(model.score_fr(fc7))                                   # 1/16
    if pool4 is not None:
        h = h + _crop(model.score_pool4(pool4_features), pool4, h.shape[-2:])
    h = model.upscore_pool4(h)                                                # 1/8
    if pool3 is not None:
        h = h + _crop(model.score_pool3(pool3_features), pool3, h.shape[-2:])
    return _crop(model.upscore8(h), final, x.shape[-2:])                    # 1/1


def _fcn_under_test(model_class, reference_class, score_layers: tuple[str, ...]) -> tuple[nn.Module, torch.Tensor]:
    """The student's class built narrow, in eval mode, with random score weights, and one odd-sized image."""
    generator = torch.Generator().manual_seed(8)
    torch.manual_seed(8)
    model = call_student("building your network", model_class, _FCN_CLASSES, _FCN_WIDTH,
                         hint="your class must take (n_class, width) as the course's FCN classes do.")
    expect(isinstance(model, reference_class), f"your network must be a subclass of {reference_class.__name__}",
           reference_class.__name__, type(model).__name__,
           f"keep `class ...({reference_class.__name__})` and write only forward().")
    model.eval()
    with torch.no_grad():
        for name in score_layers:  # the score layers start at zero, which would hide every mistake
            layer = getattr(model, name)
            bound = 1.0 / math.sqrt(layer.in_channels)
            layer.weight.copy_((2 * torch.rand(layer.weight.shape, generator=generator) - 1) * bound)
            layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=generator))
    return model, torch.randn(_FCN_INPUT, generator=generator)


def _student_fcn_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = call_student("your forward pass", model, x, hint=_FCN_HINT)
    expect(isinstance(out, torch.Tensor), "your forward pass must return a tensor of logits", "a tensor",
           type(out).__name__, "return the cropped score map (N×C×H×W).")
    expected = (x.shape[0], _FCN_CLASSES, x.shape[2], x.shape[3])
    expect(tuple(out.shape) == expected, f"the output for an input of shape {tuple(x.shape)}", expected,
           tuple(out.shape), "crop the upsampled scores to exactly the input's height and width.")
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _unused_layers(model: nn.Module, x: torch.Tensor, out: torch.Tensor, names) -> list[str]:
    """The layers whose weights can change without changing the student's output ``model(x)``.

    Args:
        names: attribute names of ``model``, or a dict from the name to report to the layer.
    """
    layers = names if isinstance(names, dict) else {name: getattr(model, name) for name in names}
    unused = []
    for name, layer in layers.items():
        weight = layer.weight
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.mul_(3.0).add_(0.05)
            changed = model(x)
            weight.copy_(saved)
        if _same(changed, out):
            unused.append(name)
    return unused


def _names(names: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _crop_mistake(out: torch.Tensor, variant, name: str, right: int, offsets=range(0, 41)) -> str | None:
    """A message when ``out`` equals ``variant(offset)`` for an offset other than ``right``."""
    for offset in offsets:
        if offset != right:
            try:
                candidate = variant(offset)
            except RuntimeError:  # the offset leaves a map too small to add
                continue
            if _same(out, candidate):
                return f"{name} is cropped from offset {offset}; the reference crops it at {right}"
    return None


@keeps_random_state
def check_fcn32s(model_class) -> None:
    """Check a student's FCN-32s forward pass (a subclass of ``FCN32s``) against the reference.

    The class is built as ``model_class(5, 0.125)`` (5 classes, 1/8 of VGG16's
    channels), its zero-initialised ``score_fr`` given random weights, and run
    on one 37×53 image; the output must equal ``FCN32s.forward`` on the same
    layers. A wrong final crop is named with its offset.
    """
    model, x = _fcn_under_test(model_class, FCN32s, ("score_fr",))
    out = _student_fcn_output(model, x)
    with torch.no_grad():
        expected = _fcn32s_variant(model, x)
        if not _same(out, expected):
            unused = _unused_layers(model, x, out, ("score_fr", "upscore"))
            if unused:
                fail(f"your output does not depend on {_names(unused)}", "every layer on the path used",
                     "a layer left out", "score fc7 with score_fr, then upsample those scores with upscore.")
            mistake = _crop_mistake(out, lambda k: _fcn32s_variant(model, x, final=k), "the upsampled output", 19)
            fail(mistake or "your FCN-32s output differs from the reference on the same weights",
                 "FCN32s.forward's logits", f"a difference of up to {(out - expected).abs().max().item():.3g}",
                 "upscore's output is 32(h+1)+32 pixels wide for an h-pixel score map and starts 19 pixels before "
                 "the input's first pixel (the 100-pixel padding, shrunk by the network's strides): crop "
                 "[19:19 + H, 19:19 + W].")
    passed("FCN-32s forward pass equals the reference on random score weights")


@keeps_random_state
def check_fcn8s(model_class) -> None:
    """Check a student's FCN-8s forward pass (a subclass of ``FCN8s``) against the reference.

    The class is built as ``model_class(5, 0.125)``, its three zero-initialised
    score layers given random weights, and run on one 37×53 image; the output
    must equal ``FCN8s.forward`` on the same layers. The message names a
    missing skip, a layer whose output never reaches the result, or a crop
    taken at the wrong offset (pool4's scores at 5, pool3's at 9, the output at
    31).
    """
    model, x = _fcn_under_test(model_class, FCN8s, ("score_fr", "score_pool4", "score_pool3"))
    out = _student_fcn_output(model, x)
    with torch.no_grad():
        expected = _fcn8s_variant(model, x)
        if not _same(out, expected):
            for pool4, pool3, what in ((None, 9, "the pool4 skip is missing"), (5, None, "the pool3 skip is missing"),
                                       (None, None, "both skips are missing: this is an FCN-32s upsampled in steps")):
                if _same(out, _fcn8s_variant(model, x, pool4=pool4, pool3=pool3)):
                    fail(what, "the sum of three score maps", "fewer", "add the cropped score_pool4 map after "
                         "upscore2 (1/16) and the cropped score_pool3 map after upscore_pool4 (1/8).")
            unused = _unused_layers(model, x, out, ("score_fr", "score_pool4", "score_pool3", "upscore2",
                                                    "upscore_pool4"))
            if unused:
                fail(f"your output does not depend on {_names(unused)}", "every layer on the path used",
                     "a layer left out", _FCN_HINT)
            mistake = (_crop_mistake(out, lambda k: _fcn8s_variant(model, x, pool4=k), "the pool4 score map", 5)
                       or _crop_mistake(out, lambda k: _fcn8s_variant(model, x, pool3=k), "the pool3 score map", 9)
                       or _crop_mistake(out, lambda k: _fcn8s_variant(model, x, final=k), "the upsampled output", 31))
            fail(mistake or "your FCN-8s output differs from the reference on the same weights",
                 "FCN8s.forward's logits", f"a difference of up to {(out - expected).abs().max().item():.3g}",
                 _FCN_HINT + " The crops are 5 (pool4), 9 (pool3) and 31 (output) pixels from the top left.")
    passed("FCN-8s forward pass equals the reference on random score weights (skips and crops)")


# ---------------------------------------------------------------- the encoder-decoder's decoder

_DECODER_INPUT = (1, 3, 37, 53)


_BILINEAR = ("bilinear", False)


def _decode(model: ResNetEncoderDecoder, images: torch.Tensor, concat_skip_first: bool = False,
            first: tuple[str, bool] = _BILINEAR, second: tuple[str, bool] = _BILINEAR) -> torch.Tensor:
    """The reference ``logits`` with one mistake at most: logits float32 N×C×H×W for images float32 N×3×H×W.

    ``first`` and ``second`` are the two upsamplings' (mode, align_corners).
    """
    def upsample(x, size, how):
        mode, align = how
        return F.interpolate(x, size=size, mode=mode, align_corners=align if mode == "bilinear" else None)

    skip = model.layer2(model.layer1(model.stem(images)))                    # 1/8
    deep = upsample(model.layer4(model.layer3(skip)), skip.shape[-2:], first)  # 1/32 -> 1/8
    joined = torch.cat([skip, deep] if concat_skip_first else [deep, skip], dim=1)
    return upsample(model.classifier(model.fuse(joined)), images.shape[-2:], second)  # 1/8 -> 1/1


def _decoder_hint(model: ResNetEncoderDecoder) -> str:
    """What the decoder does, with the channel counts of ``model``."""
    deep, skip = _out_channels(model.layer4), _out_channels(model.layer2)
    return ("upsample layer4's output (1/32) to the skip's height and width (1/8) with F.interpolate(..., "
            "size=skip.shape[-2:], mode='bilinear', align_corners=False); concatenate [upsampled, skip] along the "
            f"channels (dim=1: {deep} + {skip} = {deep + skip} channels, what self.fuse expects); apply self.fuse "
            "and self.classifier; upsample the scores the same way to images.shape[-2:].")


@keeps_random_state
def check_decoder(model_class) -> None:
    """Check a student's encoder-decoder ``logits`` (a subclass of ``ResNetEncoderDecoder``) against the reference.

    The class is built as ``model_class(5, backbone="resnet18", pretrained=False)`` with
    random weights, in eval mode, and run on one 1×3×37×53 image; its logits
    must equal the reference decoder's on the same layers. The message names
    a concatenation along the wrong axis or in the wrong order, nearest or
    corner-aligned upsampling, and a layer whose output never reaches the
    result. Applying the 1×1 classifier after the last upsampling instead of
    before gives the same numbers (both are linear) and passes.
    """
    if isinstance(model_class, type) and not issubclass(model_class, ResNetEncoderDecoder):
        fail("your network must be a subclass of ResNetEncoderDecoder", "ResNetEncoderDecoder",
             model_class.__name__, "keep `class ...(ResNetEncoderDecoder)` and write only logits().")
    torch.manual_seed(9)
    model = call_student("building your network", functools.partial(model_class, backbone="resnet18",
                                                                     pretrained=False), _FCN_CLASSES,
                         hint="keep `class ...(ResNetEncoderDecoder)` and write only logits(); leave __init__ as is.")
    expect(isinstance(model, ResNetEncoderDecoder), "your network must be a subclass of ResNetEncoderDecoder",
           "ResNetEncoderDecoder", type(model).__name__,
           "keep `class ...(ResNetEncoderDecoder)` and write only logits().")
    model.eval()
    hint = _decoder_hint(model)
    x = torch.randn(_DECODER_INPUT, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        try:
            out = call_student("your logits", model.logits, x, hint=hint)
        except CheckFailed as error:
            axis = re.search(r"Sizes of tensors must match except in dimension (\d)", str(error))
            if axis and axis.group(1) != "1":
                fail(f"you concatenated along dim={axis.group(1)}; the channels are dim=1", "torch.cat([...], dim=1)",
                     f"torch.cat([...], dim={axis.group(1)})", hint)
            raise
        expect(isinstance(out, torch.Tensor), "your logits must return a tensor", "a tensor", type(out).__name__,
               "return the upsampled class scores (N×C×H×W).")
        expected_shape = (x.shape[0], _FCN_CLASSES, x.shape[2], x.shape[3])
        expect(tuple(out.shape) == expected_shape, f"your logits for an input of shape {tuple(x.shape)}",
               expected_shape, tuple(out.shape), hint + " Upsample to an exact size, not by a fixed factor: the "
               "input's sides need not be multiples of 32.")
        expected = _decode(model, x)
        if _same(out, expected):
            passed("decoder: upsampling, skip concatenation, fuse and classifier as the reference")
            return
        nearest, corners = ("nearest", False), ("bilinear", True)
        mistakes = (
            (dict(concat_skip_first=True), "you concatenated [skip, upsampled]: self.fuse's weights are laid out for "
             "[upsampled layer4, skip], so trained or loaded weights would be read in the wrong order"),
            (dict(first=nearest), "upsampling #1 (layer4 to 1/8) is nearest-neighbour"),
            (dict(second=nearest), "upsampling #2 (scores to the input's size) is nearest-neighbour"),
            (dict(first=nearest, second=nearest), "both upsamplings are nearest-neighbour"),
            (dict(first=corners), "upsampling #1 uses align_corners=True"),
            (dict(second=corners), "upsampling #2 uses align_corners=True"),
            (dict(first=corners, second=corners), "both upsamplings use align_corners=True"))
        for variant, what in mistakes:
            if _same(out, _decode(model, x, **variant)):
                fail(what, "the reference decoder's logits", "a variant of them", hint)
        unused = _unused_layers(model, x, out, {"fuse": model.fuse[0], "classifier": model.classifier,
                                                "layer2 (the skip)": model.layer2[-1].conv2,
                                                "layer4": model.layer4[-1].conv2})
        if unused:
            fail(f"your logits do not depend on {_names(unused)}", "every layer on the path used",
                 "a layer left out", hint)
        fail("your logits differ from the reference decoder's on the same weights", "the reference decoder's logits",
             f"a difference of up to {(out - expected).abs().max().item():.3g}", hint)


# ---------------------------------------------------------------- optimiser and training loop

class _LossProbeNet(nn.Module):
    """A tiny segmentation net with batch norm that, like the handout's, returns its loss in training mode."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.frozen = nn.Conv2d(3, 6, 3, padding=1)
        self.frozen.requires_grad_(False)
        self.norm = nn.BatchNorm2d(6)
        self.score = nn.Conv2d(6, num_classes, 1)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.score(torch.relu(self.norm(self.frozen(images))))
        if self.training and targets is not None:
            return nn.functional.cross_entropy(logits, targets, ignore_index=VOID)
        return logits


def _loss_probe(seed: int, num_classes: int = 4) -> _LossProbeNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _LossProbeNet(num_classes)


@keeps_random_state
def check_optimizer(make_optimizer, lr: float = 0.0123) -> None:
    """Check ``make_optimizer(net, lr)``: Adam at ``lr`` over exactly the parameters that require gradients.

    The probe net has a frozen first convolution, so an optimiser built on
    every parameter is caught, and so is one that leaves a trainable
    parameter out, uses another learning rate or another algorithm.
    """
    net = _loss_probe(seed=10)
    optimizer = call_student("make_optimizer", make_optimizer, net, lr,
                             hint="return torch.optim.Adam(the parameters that require gradients, lr=lr).")
    expect(isinstance(optimizer, torch.optim.Optimizer), "make_optimizer must return a torch optimizer",
           "a torch.optim.Optimizer", type(optimizer).__name__, "return torch.optim.Adam(params, lr=lr).")
    expect(isinstance(optimizer, torch.optim.Adam), "the handout trains with Adam", "torch.optim.Adam",
           type(optimizer).__name__, "use torch.optim.Adam: it adapts the step per parameter, which a freshly "
           "added decoder needs far less tuning for than plain SGD.")
    names = {id(p): name for name, p in net.named_parameters()}
    given = [p for group in optimizer.param_groups for p in group["params"]]
    frozen = sorted(names[id(p)] for p in given if id(p) in names and not p.requires_grad)
    if frozen:
        fail("your optimiser holds parameters that do not require gradients", "only trainable parameters",
             _names(frozen), "pass [p for p in net.parameters() if p.requires_grad]: a frozen parameter never "
             "gets a gradient, and weight decay or a later unfreezing would still move it.")
    missing = sorted(name for name, p in net.named_parameters() if p.requires_grad and id(p) not in
                     {id(q) for q in given})
    if missing:
        fail("your optimiser leaves out trainable parameters", "every parameter that requires gradients",
             f"{_names(missing)} missing", "pass every trainable parameter of net, not only those of one layer.")
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    expect(rates == [lr], "the learning rate of your optimiser", lr, rates[0] if len(rates) == 1 else rates,
           "pass lr=lr, the function's argument, not a number of your own.")
    passed("optimiser: Adam at the given learning rate over the trainable parameters only")


def _probe_batches(num_classes: int = 4) -> DataLoader:
    """Three batches of two 3×8×10 images with targets int64 (some void)."""
    generator = torch.Generator().manual_seed(11)
    images = torch.randn(6, 3, 8, 10, generator=generator)
    targets = torch.randint(0, num_classes, (6, 8, 10), generator=generator)
    targets[torch.rand(targets.shape, generator=generator) < 0.1] = VOID
    return DataLoader(TensorDataset(images, targets), batch_size=2)


def _reference_epoch(net: nn.Module, loader, optimizer, zero_grad: bool = True) -> list[float]:
    """One epoch of the reference loop (optionally without zero_grad); returns the batch losses."""
    net.train()
    device = next(net.parameters()).device
    losses = []
    for images, targets in loader:
        if zero_grad:
            optimizer.zero_grad()
        loss = net(images.to(device), targets.to(device))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


_TRAIN_MODE_HINT = ("call net.train() before the loop: the net returns its loss only in training mode, and in eval "
                    "mode batch norm would use its running statistics and never update them (dropout would be off).")


def _fail_in_eval_mode(modes: list[bool]) -> None:
    """Fail when any forward pass of the loop (``modes``: ``net.training`` at each) ran in eval mode."""
    if modes and not all(modes):
        fail("your loop runs the net in eval mode", "net.train() before the loop", "net.training == False",
             _TRAIN_MODE_HINT)


def _weights_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(a.state_dict().values(),
                                                                          b.state_dict().values())
               if p.is_floating_point())


@keeps_random_state
def check_train_epoch(train_one_epoch) -> None:
    """Check ``train_one_epoch(net, loader, optimizer) -> float``: one pass of the training loop.

    For every batch: zero the gradients, ``loss = net(images, targets)`` (the
    net returns its loss in training mode), backward, step; before the loop,
    ``net.train()``. It returns the mean of the batch losses as a Python
    float. The probe net is handed over in eval mode with batch norm and an
    SGD optimiser with momentum, so a missing ``net.train()`` or
    ``optimizer.zero_grad()`` changes the weights and is named.
    """
    device = config.get_device()
    loader = _probe_batches()

    def setup():
        net = _loss_probe(seed=12).to(device).eval()
        params = [p for p in net.parameters() if p.requires_grad]
        return net, torch.optim.SGD(params, lr=0.2, momentum=0.9)

    net, optimizer = setup()
    modes = []
    hook = net.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    try:
        got = call_student("train_one_epoch", train_one_epoch, net, loader, optimizer,
                           hint="for images, targets in loader: zero the gradients, loss = net(images, targets), "
                                "loss.backward(), optimizer.step(); return the mean of loss.item().")
    except CheckFailed:
        _fail_in_eval_mode(modes)  # in eval mode the net returns logits, and backward() fails on them
        raise
    finally:
        hook.remove()
    _fail_in_eval_mode(modes)
    expect(isinstance(got, numbers.Real) and not isinstance(got, bool), "train_one_epoch must return the mean loss",
           "a Python float", type(got).__name__,
           "collect loss.item() of each batch (a float, which frees the graph) and return their mean.")
    reference, ref_optimizer = setup()
    losses = _reference_epoch(reference, loader, ref_optimizer)
    if not _weights_equal(net, reference):
        for variant, what, hint in (
                (dict(zero_grad=False), "the gradients are never zeroed", "call optimizer.zero_grad() for every "
                 "batch, before loss.backward(): backward() adds to .grad, so each step would use the sum of all "
                 "earlier gradients."),):
            other, other_optimizer = setup()
            _reference_epoch(other, loader, other_optimizer, **variant)
            if _weights_equal(net, other):
                fail(f"after one epoch the weights differ from the reference's: {what}", "the reference's update",
                     "a different update", hint)
        unchanged, _ = setup()
        if all(torch.equal(p, q) for p, q in zip(net.parameters(), unchanged.parameters())):
            fail("train_one_epoch did not change the weights", "updated weights", "the weights as they were",
                 "call loss.backward() and then optimizer.step() for every batch.")
        fail("after one epoch the weights differ from the reference's", "the reference's update",
             "a different update", "one step per batch, in the loader's order: zero_grad, loss = net(images, "
             "targets), backward, step.")
    mean = float(np.mean(losses))
    for wrong, what in ((losses[-1], "the last batch's loss"), (float(np.sum(losses)), "the sum of the batch losses"),
                        (losses[0], "the first batch's loss")):
        if math.isclose(float(got), wrong, rel_tol=1e-5) and not math.isclose(wrong, mean, rel_tol=1e-5):
            fail(f"train_one_epoch returns {what}", mean, float(got), "return the mean of the batch losses.")
    expect(math.isclose(float(got), mean, rel_tol=1e-4), "the mean loss train_one_epoch returns", mean, float(got),
           "return the mean of loss.item() over the batches of this epoch (losses before each update).")
    passed("training loop: train mode, zero_grad, backward and step for every batch, mean loss returned")


# ---------------------------------------------------------------- validation loop

class _ProbeNet(nn.Module):
    """A tiny segmentation net whose outputs differ in train mode (batch norm, dropout)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(0.5)
        self.score = nn.Conv2d(8, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(self.drop(torch.relu(self.norm(self.conv(images)))))


def _probe_set(num_classes: int, generator: torch.Generator) -> tuple[_ProbeNet, DataLoader]:
    """The probe net (eval-mode statistics set) and a loader of 7 images in batches of 3, 3 and 1.

    Targets are the net's own predictions with every third image mostly
    wrong and some void pixels, so the pooled mIoU and the mean of per-batch
    values differ clearly.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        net = _ProbeNet(num_classes)
    net.norm.running_mean.uniform_(-0.5, 0.5, generator=generator)
    net.norm.running_var.uniform_(0.5, 2.0, generator=generator)
    images = torch.randn(7, 3, 12, 10, generator=generator)
    with torch.inference_mode():
        targets = net.eval()(images).argmax(dim=1)
    noisy = torch.rand(targets.shape, generator=generator) < 0.25
    noisy[::3] = torch.rand(targets[::3].shape, generator=generator) < 0.8
    targets = torch.where(noisy, torch.randint(0, num_classes, targets.shape, generator=generator), targets)
    targets[torch.rand(targets.shape, generator=generator) < 0.1] = VOID
    return net, DataLoader(TensorDataset(images, targets), batch_size=3)


@keeps_random_state
def check_validation(validate_fn, num_classes: int = 5) -> None:
    """Check ``validate_fn(net, loader, num_classes)``: the mIoU of ``net`` over the whole loader.

    The reference is ``engine.evaluate`` (one confusion matrix over every
    batch). The net is handed over in training mode with dropout and batch
    norm, so a loop that forgets ``net.eval()`` gives other numbers; its calls
    are watched for autograd and for batches of one.

    Args:
        validate_fn: callable ``(net, loader, num_classes) -> float``; ``loader``
            yields (images float32 N×3×H×W, targets int64 N×H×W with 255 = void).
        num_classes: classes of the probe net.
    """
    device = config.get_device()
    generator = torch.Generator().manual_seed(7)
    net, loader = _probe_set(num_classes, generator)
    net.to(device)
    expected = engine.evaluate(net, loader, num_classes, device=device)["miou"]
    per_batch = float(np.mean([engine.evaluate(net, [batch], num_classes, device=device)["miou"]
                               for batch in loader]))
    calls = []
    hook = net.register_forward_pre_hook(
        lambda module, inputs: calls.append((torch.is_grad_enabled(), module.training, inputs[0].shape[0])))
    net.train()
    try:
        got = call_student("your validation loop", validate_fn, net, loader, num_classes,
                    hint="loop over the loader, run the net on each batch and accumulate the predictions.")
    finally:
        hook.remove()
    expect(bool(calls), "your validation loop never ran the network", "one forward pass per batch", 0,
           "call net(images) for every batch of the loader.")
    expect(not any(grad for grad, _, _ in calls), "your validation loop builds an autograd graph",
           "forward passes under torch.no_grad() or torch.inference_mode()", "gradients enabled",
           "wrap the loop in `with torch.no_grad():` (or torch.inference_mode()): it saves memory and time.")
    expect(not any(training for _, training, _ in calls), "your validation loop runs the net in training mode",
           "net.eval() before the loop", "net.training == True",
           "call net.eval() first: dropout must be off and batch norm must use its running statistics.")
    expect(max(size for _, _, size in calls) > 1, "your validation loop runs the net one image at a time",
           "whole batches from the loader (sizes 3, 3, 1)", "batches of 1",
           "pass each batch as it comes from the loader; batching is what makes validation fast.")
    got = expect_number("your validation loop must return the mIoU", got, "a float",
                        "return one number: the mIoU over the whole set.")
    if math.isclose(float(got), per_batch, rel_tol=1e-9):
        fail("your validation loop averages per-batch mIoU values", expected, float(got),
             "a mean of per-batch mIoUs weights small batches and rare classes wrongly: accumulate every "
             "prediction (or one ConfusionMatrix) and compute the mIoU once at the end.")
    expect(math.isclose(float(got), expected, rel_tol=1e-9, abs_tol=1e-12),
           "your validation mIoU over the set", expected, float(got),
           "accumulate the label maps of all batches (argmax over classes, void 255 -> -1) and call "
           "eval_semantic_segmentation once, or update one ConfusionMatrix per batch.")
    passed("validation loop gives the mIoU of the whole set, batched, in eval mode without autograd")
