"""Validation speed: the handout's loop against ``coursekit.engine.evaluate``.

The VOC handout validated one image at a time: forward a batch of one,
take the arg-max, copy the label map to the CPU as a NumPy array, turn void
(255) into chainercv's ignore label (-1) and score it. On a CPU a hand-in
with that loop took 27 minutes over the VOC validation set.

``engine.evaluate`` runs whole batches under ``torch.inference_mode`` and adds
each batch to one confusion matrix on the model's device, so nothing is
copied per image. Both loops here see the same model (the VOC encoder-decoder
in eval mode, random weights) and the same synthetic images in one process,
alternating, ``--repeats`` times each; the best time of each loop counts (the
least disturbed by other work on the machine). The script prints both times,
the speed-up and both mIoU values, and asserts that the two mIoU values agree.

Usage::

    .venv/bin/python benchmarks/evaluate_speed.py [--images 64] [--size 160] [--batch-size 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from coursekit import config, engine
from coursekit.metrics import confusion_matrix, mean_iou
from coursekit.models.encoder_decoder import ResNetEncoderDecoder

NUM_CLASSES = 21
VOID = 255


def synthetic_set(count: int, size: int, generator: torch.Generator) -> TensorDataset:
    """Images float32 count×3×size×size and blocky label maps int64 count×size×size.

    Labels are drawn on a coarse 8×8 grid and enlarged (nearest), and a
    4-pixel band at the border is void (255), as on VOC object outlines.
    """
    coarse = torch.randint(0, NUM_CLASSES, (count, 1, 8, 8), generator=generator).float()
    targets = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    targets[:, :4], targets[:, -4:], targets[:, :, :4], targets[:, :, -4:] = VOID, VOID, VOID, VOID
    images = torch.randn(count, 3, size, size, generator=generator)
    return TensorDataset(images, targets)


@torch.no_grad()
def handout_validate(model: torch.nn.Module, dataset: TensorDataset, device: torch.device) -> float:
    """The handout's loop: batch size 1, NumPy label maps, the metric called on every image.

    Each image's prediction and ground truth (void turned into chainercv's -1)
    are copied to the CPU and scored at once with a per-image confusion
    matrix; the matrices are summed so the result is the pooled mIoU.

    Returns:
        The mIoU over the whole set.
    """
    model.eval()
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for image, mask in DataLoader(dataset, batch_size=1):
        prediction = model(image.to(device)).argmax(dim=1)[0].cpu().numpy()
        ground_truth = mask[0].cpu().numpy().copy()
        ground_truth[ground_truth == VOID] = -1
        total += confusion_matrix(prediction, ground_truth, NUM_CLASSES, ignore_index=None).numpy()
    return mean_iou(total)


def kit_validate(model: torch.nn.Module, dataset: TensorDataset, batch_size: int, device: torch.device) -> float:
    """``engine.evaluate`` over batches of ``batch_size``; returns the mIoU."""
    loader = DataLoader(dataset, batch_size=batch_size)
    return float(engine.evaluate(model, loader, NUM_CLASSES, device=device)["miou"])


def timed(fn, *args) -> tuple[float, float]:
    """``(seconds, result)`` of one call of ``fn(*args)``, synchronising CUDA around it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="validation images (default 64)")
    parser.add_argument("--size", type=int, default=160, help="image side in pixels (default 160)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of engine.evaluate (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.images, args.size, args.batch_size, args.repeats) < 1:
        parser.error("--images, --size, --batch-size and --repeats must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    generator = config.seed_everything(args.seed)
    device = config.get_device()
    dataset = synthetic_set(args.images, args.size, generator)
    model = ResNetEncoderDecoder(NUM_CLASSES, pretrained=False).to(device).eval()
    with torch.inference_mode():  # warm-up, so neither loop pays for first-call set-up
        model(dataset.tensors[0][:2].to(device))

    handout_runs, kit_runs = [], []
    for _ in range(args.repeats):
        handout_runs.append(timed(handout_validate, model, dataset, device))
        kit_runs.append(timed(kit_validate, model, dataset, args.batch_size, device))
    (handout_s, handout_miou), (kit_s, kit_miou) = min(handout_runs), min(kit_runs)

    print(f"device {device}, {args.images} images of {args.size}×{args.size}, "
          f"ResNet-18 encoder-decoder, {NUM_CLASSES} classes, best of {args.repeats} runs")
    rows = [("handout loop: batch 1, NumPy label maps, metric per image",
             handout_s, handout_miou),
            (f"engine.evaluate: batch {args.batch_size}, streaming confusion matrix", kit_s, kit_miou)]
    for label, seconds, miou in rows:
        print(f"{label:<72} {seconds:8.2f} s   mIoU {miou:.6f}")
    print(f"speed-up: {handout_s / kit_s:.2f}x")
    assert abs(handout_miou - kit_miou) <= 1e-6, (
        f"the two loops disagree: mIoU {handout_miou} (handout) vs {kit_miou} (engine.evaluate)")


if __name__ == "__main__":
    main()
