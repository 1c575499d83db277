"""Validation speed: the VOC handout's per-image loop against ``coursekit.engine.evaluate``.

The handout validated one image at a time, as most hand-ins did: a DataLoader
with batch size 1, and for every image a forward pass, the cross-entropy loss
of that image (void 255 skipped) read with ``.item()``, the arg-max, the
prediction and the ground truth copied to NumPy, void turned into chainercv's
ignore label -1, and ``eval_semantic_segmentation([pred], [gt])`` called on that
one image (``coursekit.metrics``' chainercv-compatible function, which counts a
confusion matrix per call as chainercv does). It reported the mean of the
per-image mIoUs and of the per-image losses. On a CPU such a hand-in took
27 minutes over the VOC validation set.

``engine.evaluate`` runs whole batches under ``torch.inference_mode``, keeps the
loss sum on the device and adds each batch to one streaming confusion matrix,
so nothing is copied or scored per image.

Both loops see the same model (the VOC encoder-decoder, ResNet-18, random
weights, eval mode) and the same synthetic images in one process, alternating,
``--repeats`` times each; the best time of each counts (the least disturbed by
other work on the machine). Measured on ``coursekit.config.get_device()``, and
on CUDA as well when a GPU is present but not the kit's device.

Printed: both times; the handout's number (mean of per-image mIoU), which is a
different, biased number; the pooled mIoU over all pixels that both loops give
(for the handout loop from ``eval_semantic_segmentation`` on all its label maps
at the end), asserted equal within 1e-6; both losses, which agree here (every
image has the same number of non-void pixels, so the mean of per-image means is
the pixel mean); and as the last line the ratio handout time / kit time.

Usage::

    .venv/bin/python benchmarks/evaluate_speed.py [--images 256] [--size 160] [--batch-size 16] [--repeats 3]
    .venv/bin/python benchmarks/evaluate_speed.py --tiny   # a few seconds, smoke test only
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from timing import timed

from coursekit import config, engine
from coursekit.metrics import eval_semantic_segmentation
from coursekit.models.encoder_decoder import ResNetEncoderDecoder

NUM_CLASSES = 21
VOID = 255
GOAL = ">= 5x"
TINY = {"images": 4, "size": 32, "batch_size": 2, "repeats": 1}


def synthetic_set(count: int, size: int, generator: torch.Generator) -> TensorDataset:
    """Images float32 count×3×size×size and blocky label maps int64 count×size×size.

    Labels are drawn on a coarse 8×8 grid and enlarged (nearest), and a
    4-pixel band at the border is void (255), as on VOC object outlines.
    """
    coarse = torch.randint(0, NUM_CLASSES, (count, 1, 8, 8), generator=generator).float()
    targets = F.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    targets[:, :4], targets[:, -4:], targets[:, :, :4], targets[:, :, -4:] = VOID, VOID, VOID, VOID
    images = torch.randn(count, 3, size, size, generator=generator)
    return TensorDataset(images, targets)


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-void pixels; the loss both loops use."""
    return F.cross_entropy(logits, targets, ignore_index=VOID)


@torch.no_grad()
def handout_validate(model: torch.nn.Module, dataset: TensorDataset, device: torch.device) -> dict:
    """The handout's loop: batch size 1, loss and chainercv-style metric on every single image.

    Returns:
        ``{'miou': nanmean of per-image mIoU, 'loss': mean of per-image losses,
        'predictions': [...], 'ground_truths': [...]}``, the label maps as NumPy
        arrays (void = -1), kept only so the pooled mIoU can be computed afterwards.
    """
    model.eval()
    per_image_miou, per_image_loss, predictions, ground_truths = [], [], [], []
    for image, mask in DataLoader(dataset, batch_size=1):
        image, mask = image.to(device), mask.to(device)
        logits = model(image)
        per_image_loss.append(segmentation_loss(logits, mask).item())
        prediction = logits.argmax(dim=1)[0].cpu().numpy()
        ground_truth = mask[0].cpu().numpy().copy()
        ground_truth[ground_truth == VOID] = -1
        per_image_miou.append(eval_semantic_segmentation([prediction], [ground_truth])["miou"])
        predictions.append(prediction)
        ground_truths.append(ground_truth)
    return {"miou": float(np.nanmean(per_image_miou)), "loss": float(np.mean(per_image_loss)),
            "predictions": predictions, "ground_truths": ground_truths}


def kit_validate(model: torch.nn.Module, dataset: TensorDataset, batch_size: int, device: torch.device) -> dict:
    """``engine.evaluate`` over batches of ``batch_size``; its dict (pooled ``miou``, pixel-mean ``loss``, ...)."""
    loader = DataLoader(dataset, batch_size=batch_size)
    return engine.evaluate(model, loader, NUM_CLASSES, segmentation_loss, device=device)


def devices() -> list[torch.device]:
    """The devices to time on: CUDA first when present but not the kit's device, then the kit's device (last)."""
    kit_device = config.get_device()
    extra = [torch.device("cuda")] if torch.cuda.is_available() and kit_device.type != "cuda" else []
    return extra + [kit_device]


def compare(model: torch.nn.Module, dataset: TensorDataset, batch_size: int, repeats: int,
            device: torch.device) -> float:
    """Time both loops on ``device`` (alternating, best of ``repeats``), print the results, check the values.

    Returns:
        handout time / kit time.
    """
    model.to(device)
    with torch.inference_mode():  # warm-up, so neither loop pays for first-call set-up
        model(dataset.tensors[0][:2].to(device))
    handout_s = kit_s = float("inf")
    for _ in range(repeats):
        seconds, handout = timed(device, handout_validate, model, dataset, device)
        handout_s = min(handout_s, seconds)
        seconds, kit = timed(device, kit_validate, model, dataset, batch_size, device)
        kit_s = min(kit_s, seconds)
    pooled = eval_semantic_segmentation(handout["predictions"], handout["ground_truths"])["miou"]

    print(f"device {device}: {len(dataset)} images of {tuple(dataset.tensors[1].shape[1:])}, "
          f"best of {repeats} runs")
    handout_label = "handout loop (batch 1, loss + eval_semantic_segmentation per image)"
    kit_label = f"engine.evaluate (batch {batch_size}, one streaming confusion matrix)"
    width = max(len(handout_label), len(kit_label))
    print(f"  {handout_label:<{width}} {handout_s:8.2f} s   mean per-image mIoU {handout['miou']:.6f}   "
          f"pooled mIoU {pooled:.6f}   loss {handout['loss']:.6f}")
    print(f"  {kit_label:<{width}} {kit_s:8.2f} s   pooled mIoU {kit['miou']:.6f}   loss {kit['loss']:.6f}")
    print("  the handout's mean of per-image mIoU is a different (biased) number than the pooled mIoU over all "
          "pixels: it weighs every image alike and scores each class only on the images it appears in")
    print(f"  speed-up on {device}: {handout_s / kit_s:.2f}x")
    assert abs(pooled - kit["miou"]) <= 1e-6, (
        f"the pooled mIoU differs: {pooled} (handout loop) vs {kit['miou']} (engine.evaluate)")
    assert abs(handout["loss"] - kit["loss"]) <= 1e-5 * max(1.0, abs(kit["loss"])), (
        f"the losses differ: {handout['loss']} (handout loop) vs {kit['loss']} (engine.evaluate)")
    return handout_s / kit_s


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--tiny`` replaces every size by a tiny one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="validation images (default 256)")
    parser.add_argument("--size", type=int, default=160, help="image side in pixels, at least 16 (default 160)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of engine.evaluate (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images and the weights (default 0)")
    parser.add_argument("--tiny", action="store_true",
                        help="4 images of 32×32, batch 2, one run each: a smoke test of a few seconds "
                             "(overrides the sizes; its timings mean nothing)")
    args = parser.parse_args(argv)
    if args.tiny:
        vars(args).update(TINY)
    if min(args.images, args.batch_size, args.repeats) < 1 or args.size < 16:
        parser.error("--images, --batch-size and --repeats must be positive and --size at least 16")
    return args


def main(argv=None) -> None:
    """Build the model and the images, time both loops on each device, print the ratio last."""
    args = parse_args(argv)
    generator = config.seed_everything(args.seed)
    dataset = synthetic_set(args.images, args.size, generator)
    model = ResNetEncoderDecoder(NUM_CLASSES, pretrained=False).eval()
    print(f"VOC encoder-decoder (ResNet-18, random weights), {NUM_CLASSES} classes, "
          f"{torch.get_num_threads()} CPU threads")
    for device in devices():
        ratio = compare(model, dataset, args.batch_size, args.repeats, device)
    print(f"ratio: {ratio:.2f}x engine.evaluate vs the handout loop (goal {GOAL})")


if __name__ == "__main__":
    main()
