"""Checks for notebook 05 (colorization as classification).

* ``check_pool_upsample_counts(pool_upsample_counts)``  closed forms of PoolUpsampleNet's weights, outputs and
  connections, against ``coursekit.models.summary.layer_counts`` of the real network
* ``check_transpose_padding(transpose_padding)``  padding and output padding that halve / double the size
* ``check_conv_transpose_net(ConvTransposeNet)``  the strided / transposed-convolution network
* ``check_unet(UNet)``                             ConvTransposeNet with its two skip connections

Each runs the student's code on small seeded inputs next to the kit's reference
(``coursekit.models.colorization``). Networks are built with unequal sizes
(NF = 8, NC = 10) so that a mixed-up channel count shows.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from ..models import colorization as reference
from ..models.summary import layer_counts
from .report import expect, expect_close, fail, passed, run_student

KERNELS = (3, 4, 5)
NF, NC = 8, 10
_COUNT_CASES = ((1, 32, 24, 32, 32), (1, 32, 24, 64, 64), (3, 8, 10, 32, 32), (2, 16, 5, 64, 48), (1, 4, 7, 16, 16))
_KEYS = ("weights", "outputs", "connections")


@contextlib.contextmanager
def _quiet():
    """No warnings from the student's layers (e.g. PyTorch's note on padding="same" with an even kernel)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _images(n: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Seeded grayscale-like images, float32 ``n×channels×height×width`` in [0, 1]."""
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(seed))


# ---------- counting ----------

def _padded_convention(model: nn.Module, height: int, width: int) -> int:
    """Connections if every output of a convolution read ``k²·C_in`` values (zero padding counted as input)."""
    table = layer_counts(model, (1, model.num_in_channels, height, width))
    modules = dict(model.named_modules())
    total = 0
    for row in table.rows:
        if not row.counted:
            continue
        module = modules[row.name]
        if isinstance(module, nn.Conv2d):
            total += row.outputs * module.kernel_size[0] * module.kernel_size[1] * module.in_channels
        else:
            total += row.connections
    return total


def _handin_batch_norm(model: nn.Module, height: int, width: int) -> int:
    """Connections if each batch-norm row were ``(H·W)²`` (the hand-in's 16⁴, 8⁴, ...) instead of ``C·H·W``."""
    table = layer_counts(model, (1, model.num_in_channels, height, width))
    return sum((row.output_shape[1] * row.output_shape[2]) ** 2 if row.kind == "BatchNorm2d" else row.connections
               for row in table.rows if row.counted)


def _count_hint(key: str, got: int, model: nn.Module, case: tuple[int, ...]) -> str:
    """The hint for a wrong total ``key``, naming the mistake when ``got`` matches a known one."""
    nic, nf, nc, height, width = case
    table = layer_counts(model, (1, nic, height, width))
    if key == "weights":
        biases = 3 * nf + 2 * nc
        batch_norm = 2 * (nf + 2 * nf + nf + nc)
        if got == table.totals["weights"] - biases:
            return "add the biases: every convolution has one per output channel."
        if got == table.totals["weights"] - batch_norm:
            return "batch norm learns a scale and a shift per channel: 2·C weights per batch-norm layer."
        return "a k×k convolution has k²·C_in·C_out weights plus C_out biases; batch norm 2·C; pooling and upsampling none."
    if key == "outputs":
        relu = sum(row.outputs for row in table.rows if row.kind == "ReLU")
        if got == table.totals["outputs"] + relu:
            return "do not count the ReLUs' outputs: activations are listed, not counted."
        return ("add C·H·W for every convolution, pooling, batch-norm and upsampling layer; mind that PoolUpsampleNet "
                "convolves before it pools, and upsamples before its batch norm.")
    if got == _padded_convention(model, height, width):
        return ("you counted k²·C_in connections for every output of a convolution, zero padding included: padding is "
                "not an input value, so along an axis of n pixels a 3-wide kernel makes 3n - 2 connections, not 3n.")
    if got == _handin_batch_norm(model, height, width):
        return ("a batch-norm output reads one input value (at test time it scales and shifts each channel): C·H·W "
                "connections, not (H·W)².")
    return ("a convolution: C_in·C_out·(3H'-2)(3W'-2) at its input size H'×W'; a 2×2 pooling: each input value once; "
            "batch norm and nearest upsampling: one per output.")


def check_pool_upsample_counts(pool_upsample_counts) -> None:
    """Check ``pool_upsample_counts(num_in_channels, num_filters, num_colours, height, width) -> dict``.

    The dict must hold the totals ``weights``, ``outputs`` and ``connections`` of PoolUpsampleNet with kernel 3,
    as ``layer_counts`` counts them (see its docstring), for several sizes and image shapes.
    """
    for case in _COUNT_CASES:
        nic, nf, nc, height, width = case
        got = run_student("pool_upsample_counts", pool_upsample_counts, nic, nf, nc, height, width)
        expect(isinstance(got, dict) and set(_KEYS) <= set(got), "pool_upsample_counts must return a dict",
               f"keys {list(_KEYS)}", type(got).__name__ if not isinstance(got, dict) else sorted(got),
               "return {'weights': ..., 'outputs': ..., 'connections': ...}.")
        model = reference.PoolUpsampleNet(3, nf, nc, nic)
        want = layer_counts(model, (1, nic, height, width)).totals
        for key in _KEYS:
            value = got[key]
            expect(isinstance(value, int) and not isinstance(value, bool) or float(value).is_integer(),
                   f"{key} must be a whole number", "an int", value, "counts are integers: use // for divisions.")
            if int(value) != want[key]:
                fail(f"the number of {key} of PoolUpsampleNet(kernel=3, num_filters={nf}, num_colours={nc}, "
                     f"num_in_channels={nic}) on {height}×{width} images", f"{want[key]:,}", f"{int(value):,}",
                     _count_hint(key, int(value), model, case))
    passed("pool_upsample_counts")


# ---------- padding ----------

def _resampled_size(layer: nn.Module, size: int) -> tuple[int, int]:
    with torch.no_grad():
        return tuple(layer(torch.zeros(1, 1, size, size)).shape[-2:])


def check_transpose_padding(transpose_padding) -> None:
    """Check ``transpose_padding(kernel) -> (padding, output_padding)`` for kernels 3, 4 and 5 by running the layers:
    ``Conv2d(kernel, stride=2, padding)`` must halve 32×32, ``ConvTranspose2d(kernel, stride=2, padding,
    output_padding)`` must double 16×16."""
    for kernel in KERNELS:
        got = run_student("transpose_padding", transpose_padding, kernel)
        ok = isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(v, int) for v in got)
        expect(ok, f"transpose_padding({kernel}) must return two ints", "(padding, output_padding)", got,
               "return a tuple of two ints, e.g. `return padding, output_padding`.")
        padding, output_padding = got
        down = _resampled_size(nn.Conv2d(1, 1, kernel, stride=2, padding=padding), 32) if padding >= 0 else None
        expect(down == (16, 16), f"a stride-2 convolution with kernel {kernel} and padding {padding} on 32×32",
               "16×16", "×".join(map(str, down)) if down else "negative padding",
               "the output is floor((h + 2·padding - kernel) / 2) + 1; for 32 -> 16 you need 2·padding - kernel "
               "to be -1 or -2.")
        try:
            up = _resampled_size(nn.ConvTranspose2d(1, 1, kernel, stride=2, padding=padding,
                                                    output_padding=output_padding), 16)
        except (RuntimeError, ValueError) as error:
            fail(f"a stride-2 transposed convolution with kernel {kernel}, padding {padding} and output padding "
                 f"{output_padding}", "a layer that runs", f"{type(error).__name__}: {error}",
                 "output_padding must be 0 or 1 here (smaller than the stride).")
        expect(up == (32, 32), f"a stride-2 transposed convolution with kernel {kernel}, padding {padding} and output "
               f"padding {output_padding} on 16×16", "32×32", "×".join(map(str, up)),
               "the output is (h - 1)·2 - 2·padding + kernel + output_padding: choose output_padding (0 or 1) so "
               "that -2 - 2·padding + kernel + output_padding = 0.")
    passed("transpose_padding")


# ---------- networks ----------

class _CatRecorder:
    """Stands in for ``torch.cat`` during the student's forward pass and records each call's dim and shapes."""

    def __init__(self, cat):
        self.cat, self.calls = cat, []

    def __call__(self, tensors, dim=0, **kwargs):
        dim = kwargs.pop("axis", dim)
        self.calls.append((dim, [tuple(t.shape) for t in tensors]))
        return self.cat(tensors, dim=dim, **kwargs)


def _build(cls, name: str, kernel: int, nic: int) -> nn.Module:
    """The student's network ``cls(kernel, NF, NC, nic)``; it must be an nn.Module."""
    model = run_student(f"{name}(...)", cls, kernel, NF, NC, nic)
    expect(isinstance(model, nn.Module), f"{name}(kernel, num_filters, num_colours, num_in_channels) must give an "
           "nn.Module", "a subclass of torch.nn.Module", type(model).__name__,
           f"write `class {name}(nn.Module):` and call `super().__init__()` first.")
    return model


def _forward(model: nn.Module, x: torch.Tensor, name: str, hint: str):
    """The student's output on ``x`` in eval mode (no gradients) and the recorded ``torch.cat`` calls."""
    recorder = _CatRecorder(torch.cat)
    original = torch.cat
    torch.cat = recorder
    try:
        with torch.no_grad(), _quiet():
            out = run_student(f"{name}.forward", model.cpu().eval(), x)
    except RuntimeError as error:
        fail(f"{name} failed on a batch of {tuple(x.shape)}", f"logits of shape ({x.shape[0]}, {NC}, "
             f"{x.shape[2]}, {x.shape[3]})", f"RuntimeError: {error}", _cat_diagnosis(recorder.calls, name) or hint)
    finally:
        torch.cat = original
    expect(isinstance(out, torch.Tensor), f"{name} must return a tensor", "logits N×NC×H×W", type(out).__name__,
           "return the last layer's output.")
    return out, recorder.calls


def _cat_diagnosis(calls: list, name: str) -> str | None:
    """What the recorded ``torch.cat`` calls say about UNet's skips (``None`` for ConvTransposeNet or when fine)."""
    if name != "UNet":
        return None
    wrong = [dim for dim, _ in calls if dim not in (1, -3)]
    if wrong:
        return (f"you concatenated along dim={wrong[0]}; the channels are dim 1 of N×C×H×W: "
                "torch.cat((out3, out1), dim=1) and torch.cat((out4, x), dim=1).")
    if len(calls) < 2:
        return (f"forward called torch.cat {len(calls)} time(s); UNet has two skips: layer4 reads "
                "torch.cat((out3, out1), dim=1) and layer5 reads torch.cat((out4, x), dim=1).")
    return None


def _check_network(cls, name: str, reference_cls, hint: str, num_in_channels: tuple[int, ...] = (1,)) -> None:
    """Output shapes for kernels 3, 4, 5; no pooling or upsampling; parameter shapes; the reference's function."""
    for nic in num_in_channels:
        for kernel in KERNELS:
            model = _build(cls, name, kernel, nic)
            shown = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.MaxPool2d, nn.Upsample))]
            expect(not shown, f"{name} must not pool or upsample", "strided and transposed convolutions only",
                   ", ".join(shown), "go down with Conv2d(..., stride=2) and up with ConvTranspose2d(..., stride=2).")
            x = _images(2, nic, 32, 48, seed=kernel)
            out, calls = _forward(model, x, name, hint)
            want = (2, NC, 32, 48)
            if tuple(out.shape) != want:
                diagnosis = _cat_diagnosis(calls, name)
                fail(f"{name}(kernel={kernel}, num_filters={NF}, num_colours={NC}, num_in_channels={nic}) on a "
                     f"batch of {tuple(x.shape)}: the output shape", want, tuple(out.shape), diagnosis or
                     f"with kernel {kernel} the size changes: use transpose_padding({kernel}) for the strided and "
                     "transposed convolutions, and padding='same' for the last (stride-1) convolution.")
            ref = reference_cls(kernel, NF, NC, nic)
            want_shapes = [(n, tuple(p.shape)) for n, p in ref.named_parameters()]
            got_shapes = [tuple(p.shape) for p in model.parameters()]
            if got_shapes != [shape for _, shape in want_shapes]:
                diagnosis = _cat_diagnosis(calls, name)
                mismatch = next((i for i, (w, g) in enumerate(zip(want_shapes, got_shapes)) if w[1] != g),
                                min(len(want_shapes), len(got_shapes)))
                expected = (f"{want_shapes[mismatch][0]} of shape {want_shapes[mismatch][1]}"
                            if mismatch < len(want_shapes) else f"{len(want_shapes)} parameter tensors")
                found = got_shapes[mismatch] if mismatch < len(got_shapes) else f"{len(got_shapes)} parameter tensors"
                fail(f"{name}'s layers (parameter shapes in order; kernel {kernel}, NF={NF}, NC={NC}, NIC={nic})",
                     expected, found, diagnosis or hint)
            with torch.no_grad():
                for mine, theirs in zip(ref.parameters(), model.parameters()):
                    theirs.copy_(mine)
                with _quiet():
                    expected_out = ref.eval()(x)
            out, calls = _forward(model, x, name, hint)
            expect_close(f"{name}'s output with the reference's weights (kernel {kernel})", expected_out, out,
                         _cat_diagnosis(calls, name) or "the layers are right but the computation differs: " + hint,
                         rtol=1e-4, atol=1e-5)


_CONV_TRANSPOSE_HINT = ("five stages as in PoolUpsampleNet, each conv -> BatchNorm2d -> ReLU: layer1 Conv2d(NIC, NF, "
                        "stride=2), layer2 Conv2d(NF, 2NF, stride=2), layer3 ConvTranspose2d(2NF, NF, stride=2), layer4 "
                        "ConvTranspose2d(NF, NC, stride=2), then layer5 Conv2d(NC, NC, padding='same') alone; padding "
                        "and output padding from transpose_padding(kernel).")
_UNET_HINT = ("ConvTransposeNet with two skips joined along the channels (dim=1): layer4 takes "
              "torch.cat((out3, out1), dim=1), NF + NF channels; layer5 takes torch.cat((out4, x), dim=1), NC + NIC "
              "channels.")


def check_conv_transpose_net(net_class) -> None:
    """Check the student's ``ConvTransposeNet(kernel, num_filters, num_colours, num_in_channels)``.

    For kernels 3, 4 and 5 it must map ``N×NIC×H×W`` to ``N×NC×H×W`` with strided and transposed convolutions only,
    have the reference's parameters in order, and, given the reference's weights, compute the same function.
    """
    _check_network(net_class, "ConvTransposeNet", reference.ConvTransposeNet, _CONV_TRANSPOSE_HINT)
    passed("ConvTransposeNet")


def check_unet(net_class) -> None:
    """Check the student's ``UNet(kernel, num_filters, num_colours, num_in_channels)``: as ``check_conv_transpose_net``,
    with one and three input channels; a missing skip or one concatenated along another axis than the channels
    is named in the message."""
    _check_network(net_class, "UNet", reference.UNet, _UNET_HINT, num_in_channels=(1, 3))
    passed("UNet")
