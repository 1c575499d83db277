"""Checks for notebook 02 (backprop from scratch in NumPy).

Each ``check_<function>`` calls the student's function of that name on
seeded inputs and compares it with the reference in :mod:`coursekit.numpy_nn`;
its hints name the usual mistakes (wrong sigmoid derivative, a missing
average over the batch, transposed weights, a forgotten bias gradient, an
unnormalised or overflowing softmax, accuracy stuck at chance).
"""
from __future__ import annotations

import copy
import numbers

import numpy as np

from .. import numpy_nn as ref
from .report import CheckFailed, expect, expect_close, fail, passed, run_student

# Small layers of different widths, so a transposed matrix cannot go unnoticed.
_SIZES = [6, 5, 4, 3]
_BATCH = 7
_SHAPES_HINT = ("mind the shapes: inputs and activations are (N, units), W is (n_in, n_out), b is (n_out,); "
                "print the shapes of your arrays to find the mismatch.")


def _call(what: str, hint: str, fn, *args, **kwargs):
    """Run the student's ``fn``; any exception becomes a failure with ``hint``."""
    try:
        return run_student(what, fn, *args, **kwargs)
    except CheckFailed:
        raise
    except Exception as error:  # noqa: BLE001 - the student's code may raise anything
        fail(f"{what} raised {type(error).__name__}: {error}", "a result", "an exception", hint)


def _network(seed: int = 0) -> list[dict]:
    """The reference's float64 network of ``_SIZES``: the checks compare in float64, to 1e-10."""
    return ref.initialize_network(_SIZES, seed=seed, dtype=np.float64)


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(_BATCH, 6)`` and one-hot targets ``(_BATCH, 3)``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, _SIZES[-1], size=_BATCH)
    return rng.normal(size=(_BATCH, _SIZES[0])), np.eye(_SIZES[-1])[labels]


def _expect_network_shaped(what: str, network, sizes: list[int]) -> None:
    expect(isinstance(network, list) and len(network) == len(sizes) - 1, f"{what}: wrong structure",
           f"a list of {len(sizes) - 1} layer dicts", type(network).__name__ if not isinstance(network, list)
           else f"a list of {len(network)} items", "one dict {'W': ..., 'b': ...} per layer, input layer excluded.")
    for number, (layer, n_in, n_out) in enumerate(zip(network, sizes[:-1], sizes[1:]), start=1):
        expect(isinstance(layer, dict) and {"W", "b"} <= set(layer), f"{what}: layer {number} is incomplete",
               "a dict with keys 'W' and 'b'", layer if not isinstance(layer, dict) else sorted(layer),
               "store the weights under 'W' and the biases under 'b'.")
        expect(np.shape(layer["W"]) == (n_in, n_out), f"{what}: W{number} has the wrong shape", (n_in, n_out),
               np.shape(layer["W"]), "W maps n_in inputs to n_out units: shape (n_in, n_out), "
               "so a batch (N, n_in) @ W gives (N, n_out). Is it transposed?")
        expect(np.shape(layer["b"]) == (n_out,), f"{what}: b{number} has the wrong shape", (n_out,),
               np.shape(layer["b"]), "one bias per unit of the layer, a 1-D array.")


def check_initialize_network(initialize_network) -> None:
    """Shapes, dtype (float32 by default, float64 when asked), a sensible spread, broken symmetry and seeding of
    the initial weights."""
    sizes = [400, 300, 10]
    network = _call("initialize_network", _SHAPES_HINT, initialize_network, sizes, seed=0)
    _expect_network_shaped("initialize_network", network, sizes)
    again = _call("initialize_network", _SHAPES_HINT, initialize_network, sizes, seed=0)
    other = _call("initialize_network", _SHAPES_HINT, initialize_network, sizes, seed=1)
    expect(np.array_equal(again[0]["W"], network[0]["W"]), "initialize_network is not reproducible",
           "the same weights for the same seed", "different weights",
           "draw from a generator made from the seed: rng = np.random.default_rng(seed).")
    exact = _call("initialize_network(..., dtype=np.float64)", "add a dtype=np.float32 argument and build W and b "
                  "in it: W = (...).astype(dtype), b = np.zeros(n_out, dtype=dtype).", initialize_network, sizes,
                  seed=0, dtype=np.float64)
    _expect_network_shaped("initialize_network(..., dtype=np.float64)", exact, sizes)
    for number, (layer, wide) in enumerate(zip(network, exact), start=1):
        for dtype, weights, what in ((np.float32, layer, "by default"), (np.float64, wide, "with dtype=np.float64")):
            got = f"{np.asarray(weights['W']).dtype}/{np.asarray(weights['b']).dtype}"
            expect(got == f"{np.dtype(dtype)}/{np.dtype(dtype)}", f"W{number}/b{number} have the wrong dtype {what}",
                   np.dtype(dtype).name, got, "train in float32 (ten times faster, as accurate); the gradient check "
                   "asks for float64. Cast W with .astype(dtype) and make b with np.zeros(n_out, dtype=dtype).")
        expect(np.allclose(wide["W"], layer["W"], rtol=1e-6, atol=1e-7), f"W{number} depends on the dtype",
               "the same draws in both dtypes", "different weights",
               "draw the weights in float64 and only then cast them with .astype(dtype).")
    for number, (layer, n_in, n_out) in enumerate(zip(network, sizes[:-1], sizes[1:]), start=1):
        W, b = np.asarray(layer["W"]), np.asarray(layer["b"])
        expect(np.all(np.isfinite(W)) and np.all(np.isfinite(b)), f"W{number}/b{number} are not finite",
               "finite numbers", "NaN or inf", "draw the weights from a normal or uniform distribution.")
        expect(W.std() > 0, f"W{number} starts with all weights equal", "random weights", f"all {W.flat[0]}",
               "equal weights give every unit of a layer the same gradient, so they never become different: "
               "draw them at random (symmetry breaking).")
        glorot = np.sqrt(2.0 / (n_in + n_out))
        expect(0.2 * glorot <= W.std() <= 5 * glorot, f"W{number} has an unsuitable spread (standard deviation)",
               f"about sqrt(2 / (n_in + n_out)) = {glorot:.4f}", f"{W.std():.4f}",
               "too large weights saturate the sigmoids (gradients vanish), too small ones shrink the signal: "
               "scale a standard normal by sqrt(2 / (n_in + n_out)) (Glorot/Xavier).")
        expect(abs(W.mean()) < 0.1 * glorot, f"W{number} is not centred on 0", "mean about 0",
               f"{W.mean():.4f}", "draw weights symmetric around 0 (e.g. a normal with mean 0), not from [0, 1).")
        expect(np.all(np.abs(b) <= glorot), f"b{number} starts too large", "zeros (or tiny values)",
               f"max |b| = {np.abs(b).max():.4f}", "start the biases at zero.")
    expect(not np.array_equal(other[0]["W"], network[0]["W"]), "initialize_network ignores its seed",
           "different weights for a different seed", "the same weights",
           "create the generator from the seed argument, not from a fixed number.")
    passed("initialize_network")


def check_pre_activation(pre_activation) -> None:
    """``inputs @ W + b`` on a batch with a non-square ``W``."""
    rng = np.random.default_rng(1)
    inputs, W, b = rng.normal(size=(_BATCH, 6)), rng.normal(size=(6, 5)), rng.normal(size=5)
    got = _call("pre_activation", _SHAPES_HINT, pre_activation, inputs, W, b)
    expect_close("pre_activation", ref.pre_activation(inputs, W, b), got,
                 "z = inputs @ W + b: one row per sample, one column per unit; did you add the bias?")
    passed("pre_activation")


def check_sigmoid_activation(sigmoid_activation) -> None:
    """Values on ordinary and extreme inputs (no NaN for ``|z| = 1000``), shape kept."""
    z = np.concatenate([np.linspace(-8, 8, 17), [-1000.0, -60.0, 60.0, 1000.0]]).reshape(3, 7)
    with np.errstate(all="ignore"):
        got = _call("sigmoid_activation", "use 1 / (1 + np.exp(-z)), elementwise.", sigmoid_activation, z)
    expect(np.shape(got) == z.shape, "sigmoid_activation: wrong shape", z.shape, np.shape(got),
           "apply the function elementwise; do not sum or flatten.")
    expect(np.all(np.isfinite(got)), "sigmoid_activation gives NaN or inf for large |z|", "values in [0, 1]",
           np.asarray(got)[~np.isfinite(got)][:3], "exp of a large number overflows: write the sigmoid so "
           "that it never divides inf by inf, e.g. 1 / (1 + np.exp(-z)) or (1 + np.tanh(z / 2)) / 2.")
    expect_close("sigmoid_activation", ref.sigmoid_activation(z), got,
                 "sigmoid(z) = 1 / (1 + exp(-z)); sigmoid(0) = 0.5 and large z gives values near 1.",
                 rtol=1e-7, atol=1e-12)
    passed("sigmoid_activation")


def check_sigmoid_derivative(sigmoid_derivative) -> None:
    """``s * (1 - s)`` from the sigmoid's output ``s``."""
    s = ref.sigmoid_activation(np.linspace(-5, 5, 12).reshape(3, 4))
    got = _call("sigmoid_derivative", "return s * (1 - s).", sigmoid_derivative, s)
    expect_close("sigmoid_derivative", ref.sigmoid_derivative(s), got,
                 "the argument is already the sigmoid's output s, so the derivative is s * (1 - s); "
                 "do not apply the sigmoid again and do not return s alone.", rtol=1e-9, atol=1e-12)
    passed("sigmoid_derivative")


def check_softmax(softmax) -> None:
    """Rows that sum to 1, agreement with the reference, no overflow on large scores."""
    rng = np.random.default_rng(2)
    z = np.vstack([rng.normal(size=(4, 3)), [[1000.0, 999.0, -1000.0]]])
    with np.errstate(all="ignore"):
        got = _call("softmax", "exponentiate, then divide each row by its sum.", softmax, z)
    expect(np.shape(got) == z.shape, "softmax: wrong shape", z.shape, np.shape(got),
           "keep one row per sample: sum with axis=1, keepdims=True.")
    got = np.asarray(got, dtype=np.float64)
    expect(np.all(np.isfinite(got)), "softmax gives NaN or inf for large scores", "finite probabilities",
           got[-1], "exp(1000) overflows: subtract each row's maximum before np.exp (it cancels in the ratio).")
    expect(np.allclose(got.sum(axis=1), 1.0), "softmax rows do not sum to 1", "row sums of 1",
           got.sum(axis=1), "divide each row by its own sum: np.sum(e, axis=1, keepdims=True), "
           "not by the sum over the batch (axis 0) or over everything.")
    expect_close("softmax", ref.softmax(z), got, "softmax(z)_k = exp(z_k) / sum_j exp(z_j), row by row.",
                 rtol=1e-7, atol=1e-12)
    passed("softmax")


def check_forward_propagation(forward_propagation) -> None:
    """Every layer's activations for both losses, without changing the network."""
    network, (X, _) = _network(), _batch()
    before = copy.deepcopy(network)
    for loss, output in (("cross_entropy", "softmax"), ("mse", "sigmoid")):
        got = _call(f"forward_propagation(loss={loss!r})", _SHAPES_HINT, forward_propagation, network, X, loss=loss)
        expected = ref.forward_propagation(before, X, loss)
        expect(isinstance(got, list) and len(got) == len(expected),
               f"forward_propagation(loss={loss!r}) returns the wrong number of activations",
               f"a list of {len(expected)} arrays [X, A1, ..., A{len(network)}]",
               f"{type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}",
               "start the list with the inputs X and append each layer's output.")
        for number, (exp_a, got_a) in enumerate(zip(expected, got)):
            is_output = number == len(network)
            hint = (f"the output layer of the {loss!r} loss uses {output}; hidden layers use the sigmoid."
                    if is_output else "each hidden layer: sigmoid(pre_activation(previous activations, W, b)).")
            expect_close(f"forward_propagation(loss={loss!r}): activations[{number}]", exp_a, got_a,
                         "activations[0] is X itself." if number == 0 else hint, rtol=1e-7, atol=1e-10)
    for number, (old, new) in enumerate(zip(before, network), start=1):
        expect(all(np.array_equal(old[k], new[k]) for k in ("W", "b")), "forward_propagation changed the network",
               "parameters unchanged", f"layer {number} modified", "the forward pass only reads W and b.")
    passed("forward_propagation")


def _backward_hint(number: int, name: str, expected: np.ndarray, got: np.ndarray) -> str:
    """A hint for a wrong gradient of parameter ``name`` of layer ``number`` (1-based)."""
    if np.allclose(got, _BATCH * expected, rtol=1e-6, atol=1e-12):
        return (f"your gradient is {_BATCH} (the batch size) times too large: the loss is averaged over "
                "the batch, so divide the output error by N once.")
    if np.allclose(got, -expected, rtol=1e-6, atol=1e-12):
        return "the sign is flipped: the output error is (outputs - targets), not (targets - outputs)."
    if name == "b" and not np.any(got):
        return "the bias gradient is the error (delta) of the layer summed over the batch: delta.sum(axis=0)."
    if number == len(_SIZES) - 1:
        return ("output layer: delta = (outputs - targets) / N for softmax cross-entropy; for 'mse' multiply "
                "by the sigmoid derivative a * (1 - a) of the outputs. dW = A_prev.T @ delta, db = delta.sum(0).")
    return (f"hidden layer {number}: delta = (delta_next @ W_next.T) * a * (1 - a) with a this layer's "
            "activations (sigmoid derivative s * (1 - s), not s); dW = A_prev.T @ delta.")


def check_backward_propagate_error(backward_propagate_error) -> None:
    """Gradients of every parameter for both losses, compared layer by layer from the output back."""
    network, (X, targets) = _network(), _batch()
    for loss in ref.LOSSES:
        activations = ref.forward_propagation(network, X, loss)
        expected = ref.backward_propagate_error(network, activations, targets, loss)
        got = _call(f"backward_propagate_error(loss={loss!r})", _SHAPES_HINT, backward_propagate_error,
                    copy.deepcopy(network), [a.copy() for a in activations], targets.copy(), loss=loss)
        expect(isinstance(got, list) and len(got) == len(network),
               f"backward_propagate_error(loss={loss!r}) returns the wrong structure",
               f"a list of {len(network)} dicts {{'W': dW, 'b': db}}, first layer first",
               f"{type(got).__name__} of length {len(got) if hasattr(got, '__len__') else '?'}",
               "return one gradient dict per layer, in the order of the network.")
        for number in reversed(range(1, len(network) + 1)):
            grad = got[number - 1]
            for name in ("W", "b"):
                what = f"backward_propagate_error(loss={loss!r}): gradient of {name}{number}"
                expect(isinstance(grad, dict) and grad.get(name) is not None, f"{what} is missing",
                       f"an array shaped {expected[number - 1][name].shape}", "nothing",
                       "store the bias gradient too: db = delta.sum(axis=0)." if name == "b"
                       else "store dW = A_prev.T @ delta under 'W'.")
                exp_g = expected[number - 1][name]
                got_g = np.asarray(grad[name], dtype=np.float64)
                hint = _SHAPES_HINT if got_g.shape != exp_g.shape else _backward_hint(number, name, exp_g, got_g)
                expect_close(what, exp_g, got_g, hint, rtol=1e-6, atol=1e-10)
    passed("backward_propagate_error")


def check_update_weights(update_weights) -> None:
    """One in-place SGD step on every ``W`` and ``b``."""
    network, rng = _network(), np.random.default_rng(3)
    before = copy.deepcopy(network)
    gradients = [{k: rng.normal(size=v.shape) for k, v in layer.items()} for layer in network]
    expected = ref.update_weights(copy.deepcopy(network), gradients, 0.1)
    _call("update_weights", "p = p - learning_rate * gradient for each W and b.", update_weights, network,
          copy.deepcopy(gradients), 0.1)
    for number, (old, exp_layer, layer) in enumerate(zip(before, expected, network), start=1):
        for name in ("W", "b"):
            what = f"update_weights: {name}{number} after one step"
            if np.array_equal(layer[name], old[name]):
                fail(what, "updated parameters", "unchanged parameters",
                     "update the arrays of the network in place (layer['W'] -= learning_rate * grad['W']), "
                     "biases included; a new list you return is ignored by train.")
            hint = ("step against the gradient: p -= learning_rate * gradient (a + climbs the loss)."
                    if np.allclose(layer[name], 2 * old[name] - exp_layer[name])
                    else "p -= learning_rate * gradient, for every W and every b.")
            expect_close(what, exp_layer[name], layer[name], hint, rtol=1e-9, atol=1e-12)
    passed("update_weights")


def check_predict(predict) -> None:
    """Integer class labels ``(N,)``: the arg-max output unit of each sample."""
    network, (X, _) = _network(), _batch()
    expected = ref.predict(network, X)
    got = _call("predict", "run the forward pass and take np.argmax(outputs, axis=1).", predict, network, X)
    expect(np.shape(got) == expected.shape, "predict: wrong shape", expected.shape, np.shape(got),
           "return one class index per sample: np.argmax(outputs, axis=1), not the probabilities or axis=0.")
    expect(np.issubdtype(np.asarray(got).dtype, np.integer), "predict: labels are not integers", "int64",
           np.asarray(got).dtype, "np.argmax already returns integer indices.")
    expect(np.array_equal(got, expected), "predict: wrong classes", expected.tolist(), np.asarray(got).tolist(),
           "the predicted class is the output unit with the largest value, per row (axis=1).")
    passed("predict")


def check_train(train) -> None:
    """Mini-batch SGD on the toy moons: history per epoch, a falling loss and in-place updates."""
    X, labels = ref.make_toy_dataset(200, seed=0)
    X_val, labels_val = ref.make_toy_dataset(100, seed=1)
    network = ref.initialize_network([2, 10, 10, 2], seed=0, dtype=np.float64)
    start = copy.deepcopy(network)
    epochs = 100
    history = _call("train", "run forward, backward and update on each mini-batch of each epoch.", train, network,
                    X, labels, epochs=epochs, learning_rate=1.0, batch_size=10, seed=0,
                    validation=(X_val, labels_val))
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    expect(isinstance(history, dict) and all(k in history for k in keys), "train: wrong history",
           f"a dict with lists {', '.join(keys)}", sorted(history) if isinstance(history, dict) else history,
           "append the epoch's averaged loss and accuracy (and the validation ones) once per epoch.")
    for key in keys:
        expect(len(history[key]) == epochs and np.all(np.isfinite(history[key])), f"train: history[{key!r}]",
               f"{epochs} finite values (one per epoch)", f"{len(history[key])} values",
               "append exactly one number per epoch, after its last mini-batch.")
    expect(not np.array_equal(network[0]["W"], start[0]["W"]), "train did not change the network",
           "updated weights", "the initial weights", "update the network passed in, in place, after each batch.")
    loss_first, loss_last = history["train_loss"][0], history["train_loss"][-1]
    expect(loss_last < 0.75 * loss_first, "train: the loss does not fall", f"below {0.75 * loss_first:.4f}",
           f"{loss_last:.4f} (first epoch {loss_first:.4f})", "check the gradient sign in update_weights and "
           "that every mini-batch does forward, backward and update in that order.")
    expect(history["train_accuracy"][-1] >= 0.8, "train: low training accuracy on the toy data", ">= 0.8",
           f"{history['train_accuracy'][-1]:.4f}", "compare predictions with the integer labels, "
           "and one-hot encode the labels for the loss.")
    val_loss, val_accuracy = ref.evaluate(network, X_val, labels_val)
    expect_close("train: validation numbers of the last epoch", [val_loss, val_accuracy],
                 [history["val_loss"][-1], history["val_accuracy"][-1]],
                 "evaluate the validation set after the epoch's updates: its average loss and accuracy.",
                 rtol=1e-6, atol=1e-9)
    passed("train")


def check_test_accuracy(accuracy: float, num_classes: int = 10, minimum: float = 0.9) -> None:
    """A trained network's test accuracy: far from chance (``1 / num_classes``) and at least ``minimum``."""
    expect(isinstance(accuracy, numbers.Real) and 0.0 <= accuracy <= 1.0, "test accuracy is not a fraction",
           "a float in [0, 1]", accuracy, "pass the accuracy as a fraction (0.95), not a percentage (95).")
    chance = 1.0 / num_classes
    expect(accuracy > chance + 0.1, "the network is no better than guessing", f"far above chance ({chance:.2f})",
           f"{accuracy:.4f}", "accuracy near 1/K means the network learnt nothing: look at the learning rate "
           "(too large saturates the sigmoids, too small does nothing), the gradient sign (p -= lr * grad), "
           "the label encoding (one-hot targets for the loss, integer labels for the accuracy) and argmax over "
           "axis=1.")
    expect(accuracy >= minimum, "test accuracy too low", f">= {minimum}", f"{accuracy:.4f}",
           "train for more epochs or tune the learning rate; all gradient checks should pass first.")
    passed(f"test accuracy {accuracy:.4f} >= {minimum}")
