"""Validation speed: the handout's loop against ``coursekit.engine.evaluate``.

The VOC handout validated one image at a time: forward a batch of one,
take the arg-max, copy the label map to the CPU as a NumPy array, turn void
(255) into chainercv's ignore label (-1), keep it, and after the last image
call ``eval_semantic_segmentation`` once over all the kept maps. On a CPU a
hand-in with that loop took 27 minutes over the VOC validation set.

``engine.evaluate`` runs whole batches under ``torch.inference_mode`` and adds
each batch to one confusion matrix on the model's device, so nothing is
copied per image. Both loops here see the same model (the VOC encoder-decoder
in eval mode, random weights) and the same synthetic images, one after the
other in one process; the script prints both times, the speed-up and both
mIoU values, and asserts that the two mIoU values agree.

Usage::

    .venv/bin/python benchmarks/evaluate_speed.py [--images 48] [--size 128] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from coursekit import config, engine
from coursekit.metrics import eval_semantic_segmentation
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
    """The handout's loop: batch size 1, label maps kept as NumPy arrays, one metric call at the end.

    Returns:
        The mIoU over the whole set (chainercv semantics: -1 is ignored).
    """
    model.eval()
    predictions, ground_truths = [], []
    for image, mask in DataLoader(dataset, batch_size=1):
        output = model(image.to(device))
        predictions.append(output.argmax(dim=1)[0].cpu().numpy())
        ground_truth = mask[0].cpu().numpy().copy()
        ground_truth[ground_truth == VOID] = -1
        ground_truths.append(ground_truth)
    return float(eval_semantic_segmentation(predictions, ground_truths)["miou"])


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
    parser.add_argument("--images", type=int, default=48, help="validation images (default 48)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of engine.evaluate (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.images, args.size, args.batch_size) < 1:
        parser.error("--images, --size and --batch-size must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    generator = config.seed_everything(args.seed)
    device = config.get_device()
    dataset = synthetic_set(args.images, args.size, generator)
    model = ResNetEncoderDecoder(NUM_CLASSES, pretrained=False).to(device).eval()
    with torch.inference_mode():  # warm-up, so neither loop pays for first-call set-up
        model(dataset.tensors[0][:2].to(device))

    handout_s, handout_miou = timed(handout_validate, model, dataset, device)
    kit_s, kit_miou = timed(kit_validate, model, dataset, args.batch_size, device)

    print(f"device {device}, {args.images} images of {args.size}×{args.size}, "
          f"ResNet-18 encoder-decoder, {NUM_CLASSES} classes")
    rows = [("handout loop: batch 1, NumPy label maps, one eval_semantic_segmentation",
             handout_s, handout_miou),
            (f"engine.evaluate: batch {args.batch_size}, streaming confusion matrix", kit_s, kit_miou)]
    for label, seconds, miou in rows:
        print(f"{label:<72} {seconds:8.2f} s   mIoU {miou:.6f}")
    print(f"speed-up: {handout_s / kit_s:.2f}x")
    assert abs(handout_miou - kit_miou) <= 1e-6, (
        f"the two loops disagree: mIoU {handout_miou} (handout) vs {kit_miou} (engine.evaluate)")


if __name__ == "__main__":
    main()
