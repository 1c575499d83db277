"""Training throughput of the course's CNNs as a fraction of the machine's own matmul rate.

The yardstick is what the device does at its best: the best of a few
``torch.mm`` of two float32 ``n×n`` matrices (``2 n³`` flops each), in
GFLOP/s, measured at the start and again between the rounds of training. Then it trains ``coursekit.models.classifier.BetterNet`` (CIFAR-sized
3×32×32 inputs) and ``coursekit.models.fcn.FCN32s`` (random weights, a small
input) with plain SGD on random data and counts the flops they achieve.

Flops per training step: forward hooks on every ``nn.Conv2d``,
``nn.ConvTranspose2d`` and ``nn.Linear`` count the multiply-adds of one
forward pass (weight size × output positions; input positions for a
transposed convolution); a step is taken as ``3 × 2 × MACs`` (the forward
pass, then the gradients for the inputs and for the weights).

Variants: float32 (contiguous), float32 with model and inputs in
``torch.channels_last``, and channels_last under
``torch.autocast(dtype=torch.bfloat16)``, the last only where the hardware
does bf16 natively (otherwise the script says it is skipped and why). One
model per network serves all variants, converted in place between them
(plain SGD keeps no state; the data are random, so only the time matters).
After a warm-up, the variants take turns, ``--repeats`` times each; the best
time counts. The script prints images/s,
achieved GFLOP/s and the fraction of the matmul rate per model and variant,
then, last, that fraction for BetterNet float32 channels_last. Timings only;
nothing is asserted.

Usage::

    .venv/bin/python benchmarks/training_throughput.py [--batch-size 64] [--steps 4] [--repeats 3]
    .venv/bin/python benchmarks/training_throughput.py --tiny
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from timing import synchronize

from coursekit import config
from coursekit import precision as amp
from coursekit.models.classifier import BetterNet
from coursekit.models.fcn import FCN32s

VARIANTS = ("float32", "float32 channels_last", "bf16 autocast channels_last")
GOAL_VARIANT = ("BetterNet", "float32 channels_last")


def matmul_gflops(n: int, tries: int, device: torch.device) -> float:
    """GFLOP/s of the best of ``tries`` float32 ``torch.mm`` of ``n×n`` matrices (after one warm-up)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward pass of ``x``."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        # Conv2d / Linear: every output value (N·C_out·H·W) costs C_in/g·kh·kw (in_features) MACs.
        # ConvTranspose2d: every input value (N·C_in·H·W) is spread by C_out/g·kh·kw weights.
        values = inputs[0] if isinstance(module, nn.ConvTranspose2d) else output
        total += values.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(count) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return total


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` does bfloat16 natively (``coursekit.precision.native_bf16``, the engine's own test),
    and the evidence (CPU capability and flags, or the CUDA check)."""
    native = amp.native_bf16(device)
    if device.type == "cuda":
        return native, f"torch.cuda.is_bf16_supported() is {native}"
    if device.type != "cpu":
        return False, f"bf16 autocast is not measured on {device.type}"
    flags = sorted(amp._cpu_flags() & {"avx512_bf16", "amx_bf16"})
    return native, (f"CPU capability {torch.backends.cpu.get_cpu_capability()}, bf16 flags "
                    f"{', '.join(flags) or 'none'} in /proc/cpuinfo")


def prepare(model: nn.Module, variant: str, images: torch.Tensor) -> tuple[torch.Tensor, object]:
    """Put ``model`` (in place) and ``images`` in ``variant``'s memory format; returns the images and the autocast
    context, both as the engine makes them (``coursekit.precision``)."""
    channels_last = "channels_last" in variant
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return amp.images_in(images, channels_last), amp.autocast("bf16" if "bf16" in variant else "32", images.device)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
               autocast) -> None:
    """One SGD step with cross-entropy; the gradients are freed afterwards, so idle models hold none."""
    with autocast:
        loss = F.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, variant: str, images: torch.Tensor,
              targets: torch.Tensor, steps: int) -> float:
    """Seconds that ``steps`` training steps of ``variant`` take, the memory-format change excluded."""
    images, autocast = prepare(model, variant, images)
    synchronize(images.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, images, targets, autocast)
    synchronize(images.device)
    return time.perf_counter() - start


def workloads(args: argparse.Namespace, generator: torch.Generator) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """``(name, model, images, targets)`` per model: BetterNet with class labels, FCN-32s with label maps."""
    classes, n_class = 10, 21
    cifar = torch.randn(args.batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, classes, (args.batch_size,), generator=generator)
    height, width = args.fcn_size
    scenes = torch.randn(args.fcn_batch_size, 3, height, width, generator=generator)
    label_maps = torch.randint(0, n_class, (args.fcn_batch_size, height, width), generator=generator)
    return [("BetterNet", BetterNet(classes, width=args.width), cifar, labels),
            ("FCN32s", FCN32s(n_class), scenes, label_maps)]


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``--tiny`` shrinks models, inputs, steps and repeats to a few-second smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matmul-size", type=int, default=2048, help="side n of the n×n matmul (default 2048)")
    parser.add_argument("--width", type=int, default=32, help="BetterNet's first-stage channels (default 32)")
    parser.add_argument("--batch-size", type=int, default=64, help="BetterNet batch of 3×32×32 images (default 64)")
    parser.add_argument("--fcn-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="FCN input height and width (default 64 64; conv1_1 pads 100 pixels each side)")
    parser.add_argument("--fcn-batch-size", type=int, default=1, help="FCN images per step (default 1)")
    parser.add_argument("--steps", type=int, default=4, help="BetterNet steps per timed run (default 4)")
    parser.add_argument("--fcn-steps", type=int, default=1, help="FCN steps per timed run (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model and variant first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each variant; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the random data")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke run: width 8, batch 8, FCN 1×3×32×32, 1 step, no warm-up, 1 repeat")
    args = parser.parse_args(argv)
    if args.tiny:
        args.matmul_size, args.width, args.batch_size = 512, 8, 8
        args.fcn_size, args.fcn_batch_size = (32, 32), 1
        args.steps, args.fcn_steps, args.warmup, args.repeats = 1, 1, 0, 1
    if min(args.matmul_size, args.width, args.batch_size, *args.fcn_size, args.fcn_batch_size,
           args.steps, args.fcn_steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("sizes, --steps, --fcn-steps and --repeats must be positive and --warmup not negative")
    return args


def main(argv=None) -> None:
    """Measure the matmul rate, time every model and variant, print the rows and the goal's fraction."""
    args = parse_args(argv)
    generator = config.seed_everything(args.seed)
    device = config.get_device()
    matmul_runs = [matmul_gflops(args.matmul_size, 3, device)]
    bf16_native, bf16_evidence = bf16_support(device)
    variants = VARIANTS if bf16_native else VARIANTS[:2]

    seconds, flops, batch = {}, {}, {}
    for name, model, images, targets in workloads(args, generator):
        model, images, targets = model.to(device).train(), images.to(device), targets.to(device)
        flops[name], batch[name] = 3 * 2 * forward_macs(model, images), len(images)
        steps = args.steps if name == "BetterNet" else args.fcn_steps
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        for variant in variants:  # warm-up: the first calls of each variant's kernels are slow
            run_steps(model, optimizer, variant, images, targets, args.warmup)
            seconds[name, variant] = []
        for _ in range(args.repeats):
            for variant in variants:
                seconds[name, variant].append(run_steps(model, optimizer, variant, images, targets, steps) / steps)
            matmul_runs.append(matmul_gflops(args.matmul_size, 3, device))  # between rounds too: a busy moment
        del model, optimizer
    matmul = max(matmul_runs)

    print(f"device {device}, {torch.get_num_threads()} threads, float32 matmul {args.matmul_size}×{args.matmul_size}: "
          f"{matmul:.1f} GFLOP/s (best of {3 * len(matmul_runs)}); training steps: best of {args.repeats} runs")
    print(f"models: BetterNet width {args.width}, batch {args.batch_size}×3×32×32, "
          f"{flops['BetterNet'] / 1e9:.2f} GFLOP/step; FCN32s batch "
          f"{args.fcn_batch_size}×3×{args.fcn_size[0]}×{args.fcn_size[1]}, {flops['FCN32s'] / 1e9:.2f} GFLOP/step "
          f"(3 × 2 × forward MACs)")
    fraction = {}
    for (name, variant), times in seconds.items():
        best = min(times)
        achieved = flops[name] / best / 1e9
        fraction[name, variant] = achieved / matmul
        print(f"{name:<10} {variant:<28} {batch[name] / best:9.1f} images/s {achieved:8.1f} GFLOP/s "
              f"{fraction[name, variant]:6.2f}x of matmul")
    if not bf16_native:
        print(f"{VARIANTS[2]}: skipped, no native bf16 ({bf16_evidence})")
    else:
        print(f"bf16 native: {bf16_evidence}")
    print(f"ratio: {fraction[GOAL_VARIANT]:.2f}x of matmul GFLOP/s, BetterNet float32 channels_last (goal >= 0.75x)")


if __name__ == "__main__":
    main()
