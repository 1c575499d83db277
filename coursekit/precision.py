"""What the engine computes in: the floating-point precision and the memory format of images and weights.

Three precisions, named as Lightning names them:

* ``"32"``       plain float32 everywhere (the ``ci`` profile, so stored outputs compare exactly);
* ``"bf16"``     ``torch.autocast`` with bfloat16: convolutions and matrix products in bf16, weights, losses and
                 optimizer steps in float32. Chosen by default only on a CPU that does bf16 in hardware
                 (AVX-512 BF16 or AMX); elsewhere it is emulated and slower than float32;
* ``"16-mixed"`` autocast with float16 and a gradient scaler (CUDA only): float16's small range would let
                 small gradients flush to zero, so the loss is scaled up before ``backward`` and the gradients
                 are scaled down before the step (a step whose gradients overflowed is skipped).

``channels_last`` stores 4-D images and convolution weights as N×H×W×C in memory (shapes stay N×C×H×W), the
layout oneDNN's and cuDNN's fastest convolutions use. Neither option changes the maths, only the rounding.

Defaults (``"auto"`` and ``None``): float32 and the usual layout in the ``ci`` profile; otherwise bf16 on a CPU
with native bf16, 16-mixed on CUDA, float32 elsewhere, and channels_last on CPU and CUDA for networks with
convolutions. ``COURSEKIT_PRECISION`` (``32``, ``bf16``, ``16-mixed`` or ``auto``) and
``COURSEKIT_CHANNELS_LAST`` (``1`` or ``0``) override the defaults for every run of a process.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from . import config

PRECISIONS = ("32", "bf16", "16-mixed")


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where there is none, as on macOS or Windows)."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        return frozenset(cpuinfo.read_text().split()) if cpuinfo.is_file() else frozenset()
    except OSError:
        return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that says so, or an x86 CPU with
    ``avx512_bf16`` or ``amx_bf16`` whose oneDNN build uses them (not under ``ATEN_CPU_CAPABILITY=avx2``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    onednn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return onednn and capability.startswith("AVX512")


def _override(name: str, allowed: tuple[str, ...]) -> str | None:
    """The value of the environment variable ``name`` (lower-cased), ``None`` when unset or empty.

    Raises:
        ValueError: it holds something outside ``allowed``.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not understood; use one of {', '.join(allowed)}, or unset it.")
    return value


def default_precision(device: torch.device | str) -> str:
    """``"auto"``'s precision on ``device``: ``COURSEKIT_PRECISION`` if set; ``"32"`` in the ``ci`` profile;
    else ``"16-mixed"`` on CUDA, ``"bf16"`` on a CPU with native bf16, ``"32"`` elsewhere."""
    forced = _override("COURSEKIT_PRECISION", (*PRECISIONS, "auto"))
    if forced is not None and forced != "auto":
        return resolve_precision(forced, device)
    device = torch.device(device)
    if config.profile_name() == "ci":
        return "32"
    if device.type == "cuda":
        return "16-mixed"
    return "bf16" if device.type == "cpu" and native_bf16(device) else "32"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` checked against ``device``; ``"auto"`` becomes ``default_precision(device)``.

    Raises:
        ValueError: an unknown precision, or ``"16-mixed"`` off CUDA (float16 autocast needs a grad scaler,
            which the kit keeps to CUDA).
    """
    precision = str(precision).lower()
    if precision == "auto":
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; use 'auto' or one of {', '.join(PRECISIONS)}.")
    if precision == "16-mixed" and torch.device(device).type != "cuda":
        raise ValueError(f"precision='16-mixed' needs a CUDA device, not {torch.device(device).type}; "
                         "use 'bf16' or '32'.")
    return precision


def has_convolutions(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (ordinary or transposed), so that channels_last can matter."""
    return any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())


def resolve_channels_last(channels_last: bool | None, model: torch.nn.Module, device: torch.device | str) -> bool:
    """``channels_last``, with ``None`` meaning the default: ``COURSEKIT_CHANNELS_LAST`` if set; off in the
    ``ci`` profile; else on for a ``model`` with convolutions on CPU or CUDA."""
    if channels_last is not None:
        return bool(channels_last)
    forced = _override("COURSEKIT_CHANNELS_LAST", ("1", "0", "true", "false", "yes", "no"))
    if forced is not None:
        return forced in ("1", "true", "yes")
    if config.profile_name() == "ci":
        return False
    return torch.device(device).type in ("cpu", "cuda") and has_convolutions(model)


def autocast(precision: str, device: torch.device | str):
    """The context the forward pass runs in: ``torch.autocast`` for ``"bf16"`` and ``"16-mixed"``, nothing for
    ``"32"`` (``precision`` as ``resolve_precision`` returns it)."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A fresh gradient scaler for ``"16-mixed"``; ``None`` for the other precisions (bf16 has float32's range)."""
    return torch.amp.GradScaler(torch.device(device).type) if precision == "16-mixed" else None


def images_in(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``images`` (any dtype ``N×C×H×W``) in channels_last memory when asked; other tensors unchanged."""
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images


@contextlib.contextmanager
def memory_format(model: torch.nn.Module, channels_last: bool):
    """Keep ``model``'s 4-D weights in channels_last memory inside the block, and contiguous again after it.

    The parameters stay the same objects (``Module.to`` swaps their data), so an optimizer built on them keeps
    working; restoring the usual layout afterwards lets notebook code call ``weight.view(...)`` as before.
    """
    if not channels_last:
        yield model
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)
