"""One training epoch of the from-scratch NumPy MLP against the same net in PyTorch, float32 and float64.

The NumPy side is notebook 02's network built from ``coursekit.numpy_nn``
(``initialize_network``, ``forward_propagation``, ``backward_propagate_error``,
``update_weights``): 784-500-50-10, sigmoid hidden units, softmax
cross-entropy, plain SGD on mini-batches of 16. The PyTorch side is the same
net from ``nn.Linear`` layers with ``nn.Sigmoid``, ``F.cross_entropy`` and
``torch.optim.SGD``, starting from the NumPy net's initial weights, with the
same learning rate and the same shuffled batches. Each dtype casts the
weights and the inputs. The data is MNIST's training split from the data roots
(``coursekit.data.mnist.load_mnist``), or random data of MNIST's shape when
it is not there.

Every variant trains one epoch from the same start, alternating, ``--repeats``
times each; the best time counts. The script prints seconds per epoch and the
test accuracy after the epoch for each variant (the same for both sides,
showing both learn alike), then the float32 NumPy/PyTorch time ratio as the
last line. Timings only; nothing is asserted.

Usage::

    COURSEKIT_DATA=/work/shared/data .venv/bin/python benchmarks/numpy_mlp_speed.py [--images 8000] [--repeats 3]
    .venv/bin/python benchmarks/numpy_mlp_speed.py --tiny
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timing import timed

from coursekit import config, numpy_nn
from coursekit.data.download import DatasetNotFoundError
from coursekit.data.mnist import NUM_CLASSES, load_mnist

LAYER_SIZES = (784, 500, 50, NUM_CLASSES)
DTYPES = (np.float64, np.float32)


def load_data(images: int, test_images: int, seed: int) -> tuple[str, tuple[np.ndarray, ...]]:
    """MNIST from the data roots, else random data of its shape.

    Returns:
        ``(source, (X_train, y_train, X_test, y_test))``: float32 ``N×784`` in
        [0, 1] and int64 labels, at most ``images`` and ``test_images`` rows.
    """
    try:
        X_train, y_train = load_mnist("train")
        X_test, y_test = load_mnist("test")
        source = "MNIST"
    except DatasetNotFoundError:
        rng = np.random.default_rng(seed)
        X_train = rng.random((images, LAYER_SIZES[0]), dtype=np.float32)
        X_test = rng.random((test_images, LAYER_SIZES[0]), dtype=np.float32)
        y_train = rng.integers(0, NUM_CLASSES, images)
        y_test = rng.integers(0, NUM_CLASSES, test_images)
        source = "random data of MNIST's shape (MNIST not found in the data roots)"
    return source, (X_train[:images], y_train[:images], X_test[:test_images], y_test[:test_images])


def numpy_epoch(network: list[dict], X: np.ndarray, targets: np.ndarray, batches: list[np.ndarray],
                learning_rate: float) -> None:
    """One SGD epoch of the kit's NumPy functions over ``batches`` (index arrays); updates ``network`` in place."""
    for batch in batches:
        activations = numpy_nn.forward_propagation(network, X[batch])
        gradients = numpy_nn.backward_propagate_error(network, activations, targets[batch])
        numpy_nn.update_weights(network, gradients, learning_rate)


def computed_dtypes(network: list[dict], X: np.ndarray, targets: np.ndarray) -> str:
    """The dtypes the kit's functions compute in on one batch (activations and gradients), e.g. ``"float32"``."""
    activations = numpy_nn.forward_propagation(network, X)
    gradients = numpy_nn.backward_propagate_error(network, activations, targets)
    arrays = activations + [grad[name] for grad in gradients for name in ("W", "b")]
    return ",".join(sorted({array.dtype.name for array in arrays}))


def torch_net(network: list[dict], device: torch.device) -> nn.Sequential:
    """The PyTorch twin of a NumPy network: ``nn.Linear`` layers (weights ``W.T``) with sigmoids between them."""
    layers = []
    for i, layer in enumerate(network):
        n_in, n_out = layer["W"].shape
        linear = nn.Linear(n_in, n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer["W"].T.copy()))
            linear.bias.copy_(torch.from_numpy(layer["b"]))
        layers.append(linear)
        if i < len(network) - 1:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers).to(device=device, dtype=getattr(torch, network[0]["W"].dtype.name))


def torch_epoch(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batches: list[torch.Tensor],
                learning_rate: float) -> None:
    """One SGD epoch of ``model`` with softmax cross-entropy over ``batches`` (index tensors)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    for batch in batches:
        loss = F.cross_entropy(model(X[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``--tiny`` shrinks the data and the repeats to a few-second smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8000,
                        help="training images per epoch, at most the split's size (default 8000, the mirror's)")
    parser.add_argument("--test-images", type=int, default=2000, help="test images for the accuracy (default 2000)")
    parser.add_argument("--batch-size", type=int, default=16, help="SGD mini-batch size (default 16, the course's)")
    parser.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (default 1.0, the course's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each variant; the best counts (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the shuffling and random data")
    parser.add_argument("--tiny", action="store_true", help="smoke run: 256 images, 1 repeat, a few seconds")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.test_images, args.repeats = 256, 256, 1
    if min(args.images, args.test_images, args.batch_size, args.repeats) < 1:
        parser.error("--images, --test-images, --batch-size and --repeats must be positive")
    return args


def main(argv=None) -> None:
    """Time one epoch of each side in each dtype, print the rows and the float32 ratio."""
    args = parse_args(argv)
    config.seed_everything(args.seed)
    device = config.get_device()
    source, (X_train, y_train, X_test, y_test) = load_data(args.images, args.test_images, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(X_train))
    batches = [order[start:start + args.batch_size] for start in range(0, len(order), args.batch_size)]
    torch_batches = [torch.from_numpy(batch).to(device) for batch in batches]
    initial = numpy_nn.initialize_network(LAYER_SIZES, seed=args.seed, dtype=np.float64)

    seconds = {(side, dtype): [] for side in ("NumPy", "PyTorch") for dtype in DTYPES}
    accuracy, computed = {}, {}
    for _ in range(args.repeats):
        for dtype in DTYPES:
            network = [{name: value.astype(dtype) for name, value in layer.items()} for layer in initial]
            model = torch_net(network, device)  # copied before the NumPy epoch changes ``network``
            X, X_val = X_train.astype(dtype), X_test.astype(dtype)
            targets = np.eye(NUM_CLASSES, dtype=dtype)[y_train]
            computed[dtype] = computed_dtypes(network, X[batches[0]], targets[batches[0]])
            seconds["NumPy", dtype].append(timed(device, numpy_epoch, network, X, targets, batches, args.lr)[0])
            accuracy["NumPy", dtype] = numpy_nn.accuracy(numpy_nn.predict(network, X_val), y_test)

            X_t, y_t = torch.from_numpy(X).to(device), torch.from_numpy(y_train).to(device)
            seconds["PyTorch", dtype].append(timed(device, torch_epoch, model, X_t, y_t, torch_batches, args.lr)[0])
            with torch.no_grad():
                predictions = model(torch.from_numpy(X_val).to(device)).argmax(dim=1).cpu().numpy()
            accuracy["PyTorch", dtype] = numpy_nn.accuracy(predictions, y_test)

    print(f"device {device}, {source}: {len(X_train)} training and {len(X_test)} test images, "
          f"net {'-'.join(map(str, LAYER_SIZES))}, batch {args.batch_size}, lr {args.lr}, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats} epochs")
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        print(f"NumPy   {name}: {min(seconds['NumPy', dtype]):7.3f} s/epoch   test accuracy "
              f"{accuracy['NumPy', dtype]:.4f}   (activations and gradients in {computed[dtype]})")
        print(f"PyTorch {name}: {min(seconds['PyTorch', dtype]):7.3f} s/epoch   test accuracy "
              f"{accuracy['PyTorch', dtype]:.4f}")
    ratio = min(seconds["NumPy", np.float32]) / min(seconds["PyTorch", np.float32])
    print(f"ratio: {ratio:.2f}x NumPy vs PyTorch per epoch in float32 (goal <= 1x)")


if __name__ == "__main__":
    main()
