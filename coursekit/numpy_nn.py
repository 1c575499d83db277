"""A fully connected network with backpropagation written in NumPy only.

The reference solution of notebook 02 (backprop from scratch) and what its
checks compare the student's functions with. Everything works on whole
mini-batches at once: rows are samples, there is no Python loop over them.

Conventions (``N`` samples, ``D`` inputs, ``K`` outputs):

* a network is a list of layer dicts ``{"W": (n_in, n_out), "b": (n_out,)}``,
  first hidden layer first, all in one float dtype (float32 by default: ten times faster
  than float64 and as accurate for training; the gradient check computes in float64);
* inputs ``X`` are ``N x D`` floats; labels are int64 ``(N,)``; targets are
  one-hot ``N x K`` floats;
* hidden units are sigmoids; the ``loss`` picks the output units: softmax for
  ``"cross_entropy"``, sigmoid for ``"mse"`` (the classic all-sigmoid net);
* losses are averaged over the batch, so gradients are too.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

LOSSES = ("cross_entropy", "mse")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not supported; use one of {', '.join(LOSSES)}.")


def make_toy_dataset(n_samples: int = 200, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half moons in 2-D, a dataset no straight line separates.

    Args:
        n_samples: total number of points, split evenly between the classes.
        noise: standard deviation of the Gaussian jitter added to each point.
        seed: seed of the generator, so the same call gives the same data.

    Returns:
        ``X`` float64 ``(n_samples, 2)`` and ``y`` int64 ``(n_samples,)`` in {0, 1}.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples={n_samples} is too small; ask for at least 2 points (one per class).")
    rng = np.random.default_rng(seed)
    n_upper = n_samples // 2
    angles = rng.uniform(0.0, np.pi, size=n_samples)
    upper = np.stack([np.cos(angles[:n_upper]), np.sin(angles[:n_upper])], axis=1)
    lower = np.stack([1.0 - np.cos(angles[n_upper:]), 0.5 - np.sin(angles[n_upper:])], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(0.0, noise, size=(n_samples, 2))
    y = np.concatenate([np.zeros(n_upper, np.int64), np.ones(n_samples - n_upper, np.int64)])
    order = rng.permutation(n_samples)
    return X[order], y[order]


def initialize_network(layer_sizes: Sequence[int], seed: int | np.random.Generator = 0,
                       dtype=np.float32) -> list[dict[str, np.ndarray]]:
    """Glorot-initialised weights and zero biases for every layer.

    Weights are drawn from a normal with standard deviation
    ``sqrt(2 / (n_in + n_out))``, which keeps sigmoid units out of saturation
    at the start; biases start at zero (random weights already break symmetry).

    Args:
        layer_sizes: units per layer, input first, e.g. ``[784, 500, 50, 10]``.
        seed: an int seed or a ``np.random.Generator``.
        dtype: float dtype of the parameters: float32 to train, float64 for ``gradient_check``'s
            analytic gradients (float32's rounding, about 6e-8, would swamp its 1e-6 threshold).

    Returns:
        ``len(layer_sizes) - 1`` dicts with ``"W"`` ``(n_in, n_out)`` and ``"b"`` ``(n_out,)``.
    """
    sizes = list(layer_sizes)
    if len(sizes) < 2 or any(int(n) != n or n < 1 for n in sizes):
        raise ValueError(f"layer_sizes={sizes} must list at least two positive integers: inputs, ..., outputs.")
    rng = np.random.default_rng(seed)
    return [{"W": (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / (n_in + n_out))).astype(dtype),
             "b": np.zeros(n_out, dtype=dtype)}
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def pre_activation(inputs: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weighted sums of a layer: ``inputs @ W + b``, ``(N, n_in) -> (N, n_out)``."""
    return inputs @ W + b


def sigmoid_activation(z: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-z))``, elementwise, without overflow.

    Uses the identity ``sigmoid(z) = (1 + tanh(z / 2)) / 2``, which never forms
    ``exp`` of a large number, so ``z = -1000`` gives 0 without a warning.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sigmoid_derivative(activation: np.ndarray) -> np.ndarray:
    """Derivative of the sigmoid expressed by its output ``s``: ``s * (1 - s)``."""
    return activation * (1.0 - activation)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, K)`` scores; each row sums to 1.

    The row maximum is subtracted first, which changes nothing mathematically
    but keeps ``exp`` from overflowing on large scores.
    """
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward_propagation(network: list[dict], X: np.ndarray, loss: str = "cross_entropy") -> list[np.ndarray]:
    """Run a batch through the network, keeping every layer's output.

    Args:
        network: layer dicts from :func:`initialize_network`.
        X: inputs ``(N, D)``.
        loss: ``"cross_entropy"`` (softmax outputs) or ``"mse"`` (sigmoid outputs).

    Returns:
        ``[X, A1, ..., AL]``: the input and each layer's activations ``(N, n_out)``;
        the last entry is the network's output.
    """
    _check_loss(loss)
    activations = [X]
    for i, layer in enumerate(network):
        z = pre_activation(activations[-1], layer["W"], layer["b"])
        is_output = i == len(network) - 1
        activations.append(softmax(z) if is_output and loss == "cross_entropy" else sigmoid_activation(z))
    return activations


def compute_loss(outputs: np.ndarray, targets: np.ndarray, loss: str = "cross_entropy") -> float:
    """The batch-averaged loss of network outputs ``(N, K)`` against one-hot targets ``(N, K)``.

    ``"cross_entropy"``: ``-mean_n sum_k y log p``; ``"mse"``: ``mean_n 0.5 * sum_k (a - y)^2``.
    """
    _check_loss(loss)
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {outputs.shape} and targets {targets.shape} differ in shape; "
                         "targets must be one-hot, one row per sample.")
    if loss == "cross_entropy":
        return float(-np.sum(targets * np.log(np.maximum(outputs, np.finfo(outputs.dtype).tiny))) / len(outputs))
    return float(0.5 * np.sum((outputs - targets) ** 2) / len(outputs))


def backward_propagate_error(network: list[dict], activations: list[np.ndarray], targets: np.ndarray,
                             loss: str = "cross_entropy") -> list[dict[str, np.ndarray]]:
    """Gradients of the batch-averaged loss with respect to every parameter.

    Args:
        network: the layer dicts used in the forward pass.
        activations: ``[X, A1, ..., AL]`` from :func:`forward_propagation`.
        targets: one-hot targets ``(N, K)``.
        loss: the loss of the forward pass, ``"cross_entropy"`` or ``"mse"``.

    Returns:
        One dict per layer with ``"W"`` and ``"b"`` shaped like the layer's parameters.
    """
    _check_loss(loss)
    outputs = activations[-1]
    if outputs.shape != targets.shape:
        raise ValueError(f"targets {targets.shape} must be one-hot and shaped like the outputs {outputs.shape}.")
    delta = (outputs - targets) / len(outputs)  # dLoss/dz of the output layer
    if loss == "mse":
        delta = delta * sigmoid_derivative(outputs)
    gradients = [None] * len(network)
    for i in reversed(range(len(network))):
        gradients[i] = {"W": activations[i].T @ delta, "b": delta.sum(axis=0)}
        if i > 0:
            delta = (delta @ network[i]["W"].T) * sigmoid_derivative(activations[i])
    return gradients


def update_weights(network: list[dict], gradients: list[dict], learning_rate: float) -> list[dict]:
    """One SGD step in place: ``p -= learning_rate * grad`` for every ``W`` and ``b``; returns ``network``."""
    for layer, grad in zip(network, gradients, strict=True):
        layer["W"] -= learning_rate * grad["W"]
        layer["b"] -= learning_rate * grad["b"]
    return network


def predict(network: list[dict], X: np.ndarray) -> np.ndarray:
    """Predicted class per sample, int64 ``(N,)``: the arg-max output unit."""
    return forward_propagation(network, X)[-1].argmax(axis=1)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions`` equal to ``labels`` (both int ``(N,)``)."""
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must have the same shape.")
    return float(np.mean(predictions == labels))


def evaluate(network: list[dict], X: np.ndarray, labels: np.ndarray, loss: str = "cross_entropy",
             batch_size: int = 1000) -> tuple[float, float]:
    """Average loss and accuracy of ``network`` on ``X`` ``(N, D)``, int64 ``labels`` ``(N,)``."""
    total_loss, correct = 0.0, 0
    num_classes = network[-1]["b"].shape[0]
    for start in range(0, len(X), batch_size):
        x, y = X[start:start + batch_size], labels[start:start + batch_size]
        outputs = forward_propagation(network, x, loss)[-1]
        total_loss += compute_loss(outputs, np.eye(num_classes, dtype=outputs.dtype)[y], loss) * len(x)
        correct += int(np.sum(outputs.argmax(axis=1) == y))
    return total_loss / len(X), correct / len(X)


def train(network: list[dict], X: np.ndarray, labels: np.ndarray, epochs: int, learning_rate: float,
          batch_size: int = 32, loss: str = "cross_entropy", seed: int = 0,
          validation: tuple[np.ndarray, np.ndarray] | None = None,
          desc: str = "training") -> dict[str, list[float]]:
    """Mini-batch SGD over ``epochs`` passes of shuffled data; updates ``network`` in place.

    Args:
        network: layer dicts; its last layer has one unit per class.
        X: training inputs ``(N, D)``, cast to the network's dtype.
        labels: int class indices ``(N,)``; one-hot encoded here.
        epochs: passes over the data.
        learning_rate: SGD step size.
        batch_size: samples per update (the last batch of an epoch may be smaller).
        loss: ``"cross_entropy"`` or ``"mse"``.
        seed: seed of the per-epoch shuffling.
        validation: optional ``(X_val, labels_val)`` evaluated after each epoch.
        desc: label of the progress bar.

    Returns:
        History with per-epoch lists ``train_loss`` and ``train_accuracy`` (averaged
        over the epoch's mini-batches) and, with ``validation``, ``val_loss`` and ``val_accuracy``.
    """
    _check_loss(loss)
    labels = np.asarray(labels)
    num_classes = network[-1]["b"].shape[0]
    if X.ndim != 2 or len(X) != len(labels) or X.shape[1] != network[0]["W"].shape[0]:
        raise ValueError(f"X must be (N, {network[0]['W'].shape[0]}) with one label per row; "
                         f"got X {X.shape} and labels {labels.shape}.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 \
            or labels.max() >= num_classes:
        raise ValueError(f"labels must be integer class indices in [0, {num_classes}), one per row; got "
                         f"{labels.dtype} {labels.shape}. Pass integer labels, not one-hot rows.")
    X = X.astype(network[0]["W"].dtype, copy=False)
    targets = np.eye(num_classes, dtype=X.dtype)[labels]
    rng = np.random.default_rng(seed)
    history = {"train_loss": [], "train_accuracy": []}
    if validation is not None:
        history.update(val_loss=[], val_accuracy=[])
    progress = tqdm(range(epochs), desc=desc, unit="epoch")
    for _ in progress:
        order = rng.permutation(len(X))
        total_loss, correct = 0.0, 0
        for start in range(0, len(X), batch_size):
            batch = order[start:start + batch_size]
            activations = forward_propagation(network, X[batch], loss)
            total_loss += compute_loss(activations[-1], targets[batch], loss) * len(batch)
            correct += int(np.sum(activations[-1].argmax(axis=1) == labels[batch]))
            update_weights(network, backward_propagate_error(network, activations, targets[batch], loss),
                           learning_rate)
        history["train_loss"].append(total_loss / len(X))
        history["train_accuracy"].append(correct / len(X))
        if validation is not None:
            val_loss, val_accuracy = evaluate(network, *validation, loss=loss)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
        progress.set_postfix(loss=f"{history['train_loss'][-1]:.4f}", acc=f"{history['train_accuracy'][-1]:.4f}")
    return history


def numerical_gradients(network: list[dict], X: np.ndarray, targets: np.ndarray, loss: str = "cross_entropy",
                        epsilon: float = 1e-5, max_entries: int | None = None,
                        seed: int = 0) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Central-difference gradients ``(L(p + eps) - L(p - eps)) / (2 eps)``, in float64.

    Args:
        network: layer dicts (copied to float64; the original is not changed).
        X: inputs ``(N, D)``; targets: one-hot ``(N, K)``.
        loss: ``"cross_entropy"`` or ``"mse"``.
        epsilon: the step.
        max_entries: check at most this many randomly chosen entries per parameter
            array (``None``: every entry).
        seed: seed for choosing the entries.

    Returns:
        Per layer, ``{"W": (flat_indices, values), "b": (flat_indices, values)}``.
    """
    rng = np.random.default_rng(seed)
    net = [{name: value.astype(np.float64) for name, value in layer.items()} for layer in network]
    X = np.asarray(X, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)

    def loss_at() -> float:
        return compute_loss(forward_propagation(net, X, loss)[-1], targets, loss)

    result = []
    for layer in net:
        per_param = {}
        for name in ("W", "b"):
            flat = layer[name].reshape(-1)  # a view: editing it edits the layer
            count = flat.size if max_entries is None else min(max_entries, flat.size)
            indices = np.sort(rng.choice(flat.size, size=count, replace=False))
            values = np.empty(count)
            for j, index in enumerate(indices):
                original = flat[index]
                flat[index] = original + epsilon
                plus = loss_at()
                flat[index] = original - epsilon
                minus = loss_at()
                flat[index] = original
                values[j] = (plus - minus) / (2.0 * epsilon)
            per_param[name] = (indices, values)
        result.append(per_param)
    return result


def gradient_check(network: list[dict], X: np.ndarray, targets: np.ndarray, gradients: list[dict],
                   loss: str = "cross_entropy", epsilon: float = 1e-5, max_entries: int | None = None,
                   seed: int = 0) -> dict[str, float]:
    """Compare analytic ``gradients`` with central differences, parameter by parameter.

    The relative error of a parameter array is ``||a - n|| / (||a|| + ||n||)``
    over its checked entries (analytic ``a``, numerical ``n``). A norm-wise
    ratio, unlike an entry-wise one, is not inflated by entries whose true
    gradient is nearly 0. With float64 and correct backprop it is far below ``1e-6``.

    Args:
        network, X, targets, loss, epsilon, max_entries, seed: as in :func:`numerical_gradients`.
        gradients: analytic gradients, one ``{"W", "b"}`` dict per layer (e.g. from
            :func:`backward_propagate_error` on the same batch).

    Returns:
        ``{"W1": err, "b1": err, ...}``: the relative error of each parameter
        array (layers numbered from 1); ``max(result.values())`` is the overall error.
    """
    if len(gradients) != len(network):
        raise ValueError(f"got gradients for {len(gradients)} layers, but the network has {len(network)}.")
    numerical = numerical_gradients(network, X, targets, loss, epsilon, max_entries, seed)
    errors = {}
    for number, (layer, analytic, checked) in enumerate(zip(network, gradients, numerical), start=1):
        for name, (indices, values) in checked.items():
            if np.shape(analytic[name]) != layer[name].shape:
                raise ValueError(f"gradient {name}{number} has shape {np.shape(analytic[name])}; "
                                 f"it must match the parameter's shape {layer[name].shape}.")
            a = np.asarray(analytic[name], dtype=np.float64).reshape(-1)[indices]
            scale = np.linalg.norm(a) + np.linalg.norm(values)
            errors[f"{name}{number}"] = float(np.linalg.norm(a - values) / scale) if scale > 0 else 0.0
    return errors
