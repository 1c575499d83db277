"""Streaming mIoU: ``coursekit.metrics.ConfusionMatrix`` against torchmetrics' ``MulticlassJaccardIndex``.

Both accumulate a 21-class confusion matrix batch by batch (``update``) and
read the mean IoU off it at the end (``compute``): the kit's
``ConfusionMatrix(21, ignore_index=255)`` and torchmetrics'
``MulticlassJaccardIndex(num_classes=21, ignore_index=255, average="macro")``,
with its default arguments (including ``validate_args=True``, as a course
notebook would write it). They see the same predictions and targets, already
on the device: ``--batches`` batches of N×H×W int64 label maps, blocky targets
with a 4-pixel void (255) band at the border, and predictions that copy the
target on about two thirds of the pixels and are a random class elsewhere.

Every one of the 21 classes occurs in both the predictions and the targets
(asserted): torchmetrics scores a class absent from both as 0 by default
(``zero_division``) and averages it in, where the kit gives it NaN and leaves
it out (chainercv's convention), so on data lacking a class the two mIoU values
would legitimately differ. Here they must agree within 1e-6 (asserted).

The two sides run alternating in one process, ``--repeats`` times each, on
``coursekit.config.get_device()``; the best time of each counts. The seed is set
without torch's deterministic mode: under it torchmetrics replaces
``torch.bincount`` by a comparison against every class (pixels × K² booleans),
which would time a fallback rather than the library's ordinary path.

Usage::

    .venv/bin/python benchmarks/metrics_speed.py [--batches 200] [--batch-size 8] [--size 256] [--repeats 3]
    .venv/bin/python benchmarks/metrics_speed.py --tiny   # a few seconds, smoke test only
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

from timing import timed

from coursekit import config
from coursekit.metrics import ConfusionMatrix

NUM_CLASSES = 21
VOID = 255
GOAL = ">= 1x, equal values"
TINY = {"batches": 3, "batch_size": 2, "size": 32, "repeats": 1}


def synthetic_batches(batches: int, batch_size: int, size: int, generator: torch.Generator,
                      device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` pairs (predictions, targets), each int64 batch_size×size×size on ``device``.

    Targets are drawn on a coarse 8×8 grid and enlarged (nearest), with a
    4-pixel void (255) band at the border; predictions equal the target on
    about two thirds of the pixels and are a uniformly random class elsewhere
    (void pixels included).
    """
    pairs = []
    for _ in range(batches):
        coarse = torch.randint(0, NUM_CLASSES, (batch_size, 1, 8, 8), generator=generator).float()
        targets = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
        noise = torch.randint(0, NUM_CLASSES, targets.shape, generator=generator)
        predictions = torch.where(torch.rand(targets.shape, generator=generator) < 2 / 3, targets, noise)
        targets[:, :4], targets[:, -4:], targets[:, :, :4], targets[:, :, -4:] = VOID, VOID, VOID, VOID
        pairs.append((predictions.to(device), targets.to(device)))
    return pairs


def kit_miou(pairs, device: torch.device) -> tuple[float, torch.Tensor]:
    """The kit's streaming confusion matrix over ``pairs``: (mIoU, the K×K matrix)."""
    confusion = ConfusionMatrix(NUM_CLASSES, ignore_index=VOID, device=device)
    for predictions, targets in pairs:
        confusion.update(predictions, targets)
    return float(confusion.compute()["miou"]), confusion.matrix


def torchmetrics_miou(pairs, device: torch.device) -> float:
    """torchmetrics' ``MulticlassJaccardIndex`` (macro, void skipped) over ``pairs``: the mIoU."""
    metric = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=VOID, average="macro").to(device)
    for predictions, targets in pairs:
        metric.update(predictions, targets)
    return float(metric.compute())


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--tiny`` replaces every size by a tiny one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="batches fed to each metric (default 200)")
    parser.add_argument("--batch-size", type=int, default=8, help="label maps per batch (default 8)")
    parser.add_argument("--size", type=int, default=256, help="label map side in pixels, at least 16 (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each metric; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic label maps (default 0)")
    parser.add_argument("--tiny", action="store_true",
                        help="3 batches of 2×32×32, one run each: a smoke test of a few seconds "
                             "(overrides the sizes; its timings mean nothing)")
    args = parser.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    if min(args.batches, args.batch_size, args.repeats) < 1 or args.size < 16:
        parser.error("--batches, --batch-size and --repeats must be positive and --size at least 16")
    return args


def main(argv=None) -> None:
    """Make the label maps, time both metrics alternating, check the values, print the ratio last."""
    args = parse_args(argv)
    generator = config.seed_everything(args.seed, deterministic=False)
    device = config.get_device()
    pairs = synthetic_batches(args.batches, args.batch_size, args.size, generator, device)
    # warm-up, so neither side pays for first-call set-up
    kit_miou(pairs[:1], device)
    torchmetrics_miou(pairs[:1], device)
    kit_s = torchmetrics_s = float("inf")
    for _ in range(args.repeats):
        seconds, (kit_value, matrix) = timed(device, kit_miou, pairs, device)
        kit_s = min(kit_s, seconds)
        seconds, torchmetrics_value = timed(device, torchmetrics_miou, pairs, device)
        torchmetrics_s = min(torchmetrics_s, seconds)

    print(f"device {device}: {args.batches} batches of {args.batch_size}×{args.size}×{args.size} int64, "
          f"{NUM_CLASSES} classes, void {VOID}, best of {args.repeats} runs")
    print(f"  coursekit ConfusionMatrix             {kit_s:8.3f} s   mIoU {kit_value:.8f}")
    print(f"  torchmetrics MulticlassJaccardIndex   {torchmetrics_s:8.3f} s   mIoU {torchmetrics_value:.8f}")
    assert bool((matrix.sum(dim=0) > 0).all() and (matrix.sum(dim=1) > 0).all()), (
        "a class is missing from the predictions or the targets; the two metrics treat absent classes differently")
    assert abs(kit_value - torchmetrics_value) <= 1e-6, (
        f"the mIoU values differ: {kit_value} (ConfusionMatrix) vs {torchmetrics_value} (torchmetrics)")
    print(f"ratio: {torchmetrics_s / kit_s:.2f}x ConfusionMatrix vs torchmetrics MulticlassJaccardIndex (goal {GOAL})")


if __name__ == "__main__":
    main()
