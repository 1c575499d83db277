"""Augmented CIFAR-10 batches: coursekit's BatchLoader against a per-sample PIL pipeline.

Both produce the same kind of batch (random crop with 4-pixel padding,
horizontal flip, normalisation, float32 B×3×32×32). The classic pipeline runs
torchvision transforms on one PIL image at a time through a DataLoader; the
kit's loader augments whole batches as tensors. Both epochs run side by side
in one process, alternating, ``--repeats`` times each; the best time of each
counts. The last line is the ratio.

    .venv/bin/python benchmarks/cifar_loader_speed.py [--images 10000] [--batch-size 128] [--repeats 3] [--tiny]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from torchvision import transforms

from coursekit import config
from coursekit.data import synthetic
from coursekit.data.cifar import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, BatchLoader


def one_epoch(loader) -> tuple[float, int]:
    """Seconds to draw every batch of ``loader`` once, and the number of images drawn."""
    start, count = time.perf_counter(), 0
    for images, _ in loader:
        count += len(images)
    return time.perf_counter() - start, count


def parse_args(argv=None) -> argparse.Namespace:
    """The command line: sizes, repeats, and ``--tiny`` for a smoke run of a few seconds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="training images (from the data roots, else synthetic)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each loader; the best counts (default 3)")
    parser.add_argument("--tiny", action="store_true", help="256 images, one repeat: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.repeats = 256, 1
    if min(args.images, args.batch_size, args.repeats) < 1:
        parser.error("--images, --batch-size and --repeats must be positive")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    config.seed_everything(0)
    pil_pipeline = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                       transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            dataset = CIFAR10(train=True, transform=pil_pipeline)
        except RuntimeError:
            synthetic.write_cifar10(tmp, n_per_batch=args.images // 5, n_test=10, seed=0)
            dataset = CIFAR10(root=tmp, train=True, transform=pil_pipeline)
        dataset.data, dataset.targets = dataset.data[:args.images], dataset.targets[:args.images]
        per_sample = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0)
        batched = BatchLoader(dataset, args.batch_size, shuffle=True, augment=True, device="cpu",
                              generator=torch.Generator().manual_seed(0))
        one_epoch(batched)  # warm-up
        runs = [(one_epoch(per_sample), one_epoch(batched)) for _ in range(args.repeats)]
    (pil_seconds, n), (batch_seconds, m) = min(r[0] for r in runs), min(r[1] for r in runs)
    assert n == m == len(dataset.targets)
    print(f"images per epoch: {n}, batch size {args.batch_size}, device cpu, {torch.get_num_threads()} threads, "
          f"best of {args.repeats}")
    print(f"per-sample torchvision transforms on PIL images (DataLoader): {pil_seconds:.3f} s")
    print(f"coursekit BatchLoader (whole batches as tensors): {batch_seconds:.3f} s")
    print(f"ratio: {pil_seconds / batch_seconds:.2f}x BatchLoader vs per-sample DataLoader (goal >= 20x)")


if __name__ == "__main__":
    main()
