"""Tests of coursekit.checks.backprop: the reference passes, stubs and typical mistakes fail."""
import numpy as np
import pytest

from coursekit import numpy_nn as nn
from coursekit.checks import backprop
from coursekit.checks.report import CheckFailed

FUNCTIONS = ["initialize_network", "pre_activation", "sigmoid_activation", "sigmoid_derivative", "softmax",
             "forward_propagation", "backward_propagate_error", "update_weights", "predict", "train"]


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", FUNCTIONS)
def test_reference_passes(name, capsys):
    getattr(backprop, f"check_{name}")(getattr(nn, name))
    assert f"check passed: {name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", FUNCTIONS)
def test_stub_fails_with_clear_message(name):
    with pytest.raises(CheckFailed, match="not implemented yet"):
        getattr(backprop, f"check_{name}")(stub)


# --- typical mistakes, one mistaken version each -------------------------------------------------

def init_transposed(sizes, seed=0, dtype=np.float32):
    return [{"W": layer["W"].T.copy(), "b": layer["b"]} for layer in nn.initialize_network(sizes, seed, dtype)]


def init_zeros(sizes, seed=0, dtype=np.float32):
    return [{"W": np.zeros((a, b), dtype), "b": np.zeros(b, dtype)} for a, b in zip(sizes[:-1], sizes[1:])]


def init_standard_normal(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [{"W": rng.standard_normal((a, b)).astype(dtype), "b": np.zeros(b, dtype)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def init_uniform_01(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [{"W": (rng.random((a, b)) * 0.1).astype(dtype), "b": np.zeros(b, dtype)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def init_ignores_seed(sizes, seed=0, dtype=np.float32):
    return nn.initialize_network(sizes, seed=0, dtype=dtype)


def init_always_float64(sizes, seed=0, dtype=np.float32):
    return nn.initialize_network(sizes, seed, dtype=np.float64)


def init_without_dtype(sizes, seed=0):
    return nn.initialize_network(sizes, seed)


def init_draws_in_dtype(sizes, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)  # float32 draws come from another algorithm than float64 ones
    return [{"W": rng.standard_normal((a, b), dtype=dtype) * dtype(np.sqrt(2.0 / (a + b))), "b": np.zeros(b, dtype)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def init_unseeded(sizes, seed=0, dtype=np.float32):
    return nn.initialize_network(sizes, np.random.default_rng(), dtype)


def pre_activation_without_bias(inputs, W, b):
    return inputs @ W


def pre_activation_transposed(inputs, W, b):
    return inputs @ W.T + b


def sigmoid_overflowing(z):
    return np.exp(z) / (1 + np.exp(z))


def sigmoid_wrong_sign(z):
    return 1 / (1 + np.exp(z))


def sigmoid_derivative_is_s(s):
    return s


def sigmoid_derivative_of_s(s):
    return nn.sigmoid_activation(s) * (1 - nn.sigmoid_activation(s))


def softmax_unnormalised(z):
    return np.exp(z - z.max(axis=1, keepdims=True))


def softmax_unstable(z):
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def softmax_over_batch(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def forward_softmax_everywhere(network, X, loss="cross_entropy"):
    activations = [X]
    for layer in network:
        activations.append(nn.softmax(nn.pre_activation(activations[-1], layer["W"], layer["b"])))
    return activations


def forward_ignores_loss(network, X, loss="cross_entropy"):
    return nn.forward_propagation(network, X)


def forward_without_inputs(network, X, loss="cross_entropy"):
    return nn.forward_propagation(network, X, loss)[1:]


def _backward(network, activations, targets, loss="cross_entropy", mistake=None):
    """The reference backward pass with one named mistake."""
    n = 1 if mistake == "sum_not_mean" else len(targets)
    delta = (activations[-1] - targets) / n
    if mistake == "sign":
        delta = -delta
    if loss == "mse" and mistake != "mse_no_derivative":
        delta = delta * nn.sigmoid_derivative(activations[-1])
    gradients = [None] * len(network)
    for i in reversed(range(len(network))):
        db = np.zeros_like(delta.sum(axis=0)) if mistake == "no_bias" else delta.sum(axis=0)
        gradients[i] = {"W": activations[i].T @ delta, "b": db}
        if i > 0:
            W = network[i]["W"] if mistake == "transposed" else network[i]["W"].T
            a = activations[i]
            delta = (delta @ W) * (a if mistake == "derivative_s" else a * (1 - a))
    return gradients


def backward_with(mistake):
    def backward(network, activations, targets, loss="cross_entropy"):
        return _backward(network, activations, targets, loss, mistake)
    return backward


def backward_missing_bias(network, activations, targets, loss="cross_entropy"):
    return [{"W": g["W"]} for g in nn.backward_propagate_error(network, activations, targets, loss)]


def update_ascent(network, gradients, learning_rate):
    for layer, grad in zip(network, gradients):
        layer["W"] += learning_rate * grad["W"]
        layer["b"] += learning_rate * grad["b"]
    return network


def update_forgets_bias(network, gradients, learning_rate):
    for layer, grad in zip(network, gradients):
        layer["W"] -= learning_rate * grad["W"]
    return network


def update_not_in_place(network, gradients, learning_rate):
    return [{k: layer[k] - learning_rate * grad[k] for k in layer} for layer, grad in zip(network, gradients)]


def predict_axis0(network, X):
    return nn.forward_propagation(network, X)[-1].argmax(axis=0)


def predict_probabilities(network, X):
    return nn.forward_propagation(network, X)[-1]


def _train(network, X, labels, epochs, learning_rate, batch_size=32, seed=0, validation=None, mistake=None):
    """A bare mini-batch SGD loop with one named mistake."""
    targets = np.eye(network[-1]["b"].shape[0])[labels]
    history = {"train_loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": []}
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        if mistake == "validate_before_update":
            val = nn.evaluate(network, *validation)
        order = rng.permutation(len(X))
        losses, correct = [], 0
        for start in range(0, len(X), batch_size):
            batch = order[start:start + batch_size]
            activations = nn.forward_propagation(network, X[batch])
            losses.append(nn.compute_loss(activations[-1], targets[batch]) * len(batch))
            correct += int((activations[-1].argmax(axis=1) == labels[batch]).sum())
            gradients = nn.backward_propagate_error(network, activations, targets[batch])
            if mistake == "ascent":
                gradients = [{k: -v for k, v in g.items()} for g in gradients]
            if mistake != "no_update":
                nn.update_weights(network, gradients, learning_rate)
            if mistake == "per_batch_history":
                history["train_loss"].append(losses[-1] / len(batch))
        if mistake != "per_batch_history":
            history["train_loss"].append(sum(losses) / len(X))
        history["train_accuracy"].append(correct / len(X))
        if mistake != "validate_before_update":
            val = nn.evaluate(network, *validation)
        history["val_loss"].append(val[0])
        history["val_accuracy"].append(val[1])
    return history


def train_with(mistake):
    def train(network, X, labels, epochs, learning_rate, batch_size=32, seed=0, validation=None):
        return _train(network, X, labels, epochs, learning_rate, batch_size, seed, validation, mistake)
    return train


MISTAKES = [
    ("initialize_network", init_transposed, "transposed"),
    ("initialize_network", init_zeros, "symmetry"),
    ("initialize_network", init_standard_normal, "saturate"),
    ("initialize_network", init_uniform_01, "not centred"),
    ("initialize_network", init_ignores_seed, "ignores its seed"),
    ("initialize_network", init_always_float64, "wrong dtype by default"),
    ("initialize_network", init_without_dtype, "add a dtype=np.float32 argument"),
    ("initialize_network", init_draws_in_dtype, "depends on the dtype"),
    ("initialize_network", init_unseeded, "not reproducible"),
    ("pre_activation", pre_activation_without_bias, "bias"),
    ("pre_activation", pre_activation_transposed, "raised ValueError"),
    ("sigmoid_activation", sigmoid_overflowing, "large"),
    ("sigmoid_activation", sigmoid_wrong_sign, "sigmoid"),
    ("sigmoid_derivative", sigmoid_derivative_is_s, r"s \* \(1 - s\)"),
    ("sigmoid_derivative", sigmoid_derivative_of_s, "do not apply the sigmoid again"),
    ("softmax", softmax_unnormalised, "sum to 1"),
    ("softmax", softmax_unstable, "subtract each row's maximum"),
    ("softmax", softmax_over_batch, "axis 0"),
    ("forward_propagation", forward_softmax_everywhere, "hidden layer"),
    ("forward_propagation", forward_ignores_loss, "'mse' loss uses sigmoid"),
    ("forward_propagation", forward_without_inputs, "number of activations"),
    ("backward_propagate_error", backward_with("derivative_s"), r"s \* \(1 - s\), not s"),
    ("backward_propagate_error", backward_with("sum_not_mean"), "batch size"),
    ("backward_propagate_error", backward_with("transposed"), "raised ValueError"),
    ("backward_propagate_error", backward_with("no_bias"), "bias gradient"),
    ("backward_propagate_error", backward_missing_bias, "gradient of b3 is missing"),
    ("backward_propagate_error", backward_with("sign"), "sign is flipped"),
    ("backward_propagate_error", backward_with("mse_no_derivative"), "for 'mse' multiply"),
    ("update_weights", update_ascent, "climbs the loss"),
    ("update_weights", update_forgets_bias, "unchanged parameters"),
    ("update_weights", update_not_in_place, "in place"),
    ("predict", predict_axis0, "wrong shape"),
    ("predict", predict_probabilities, "not the probabilities"),
    ("train", train_with("no_update"), "did not change"),
    ("train", train_with("ascent"), "does not fall"),
    ("train", train_with("per_batch_history"), "one number per epoch"),
    ("train", train_with("validate_before_update"), "after the epoch's updates"),
]


@pytest.mark.parametrize(("name", "mistake", "message"), MISTAKES, ids=[m[1].__name__ for m in MISTAKES])
def test_typical_mistake_fails_with_hint(name, mistake, message):
    with pytest.raises(CheckFailed, match=message):
        getattr(backprop, f"check_{name}")(mistake)


def test_plain_textbook_sigmoid_passes(capsys):
    """1 / (1 + exp(-z)) overflows to inf for z = -1000 but still gives the right 0."""
    backprop.check_sigmoid_activation(lambda z: 1 / (1 + np.exp(-z)))
    assert "check passed" in capsys.readouterr().out


def test_bare_training_loop_passes(capsys):
    backprop.check_train(train_with(None))
    assert "check passed: train" in capsys.readouterr().out


@pytest.mark.parametrize(("accuracy", "message"), [(0.098, "no better than guessing"), (0.2, "no better"),
                                                   (0.85, "too low"), (95.0, "not a fraction")])
def test_check_test_accuracy_fails(accuracy, message):
    with pytest.raises(CheckFailed, match=message):
        backprop.check_test_accuracy(accuracy, num_classes=10, minimum=0.9)


def test_check_test_accuracy_passes(capsys):
    backprop.check_test_accuracy(0.9512, num_classes=10, minimum=0.93)
    assert "check passed: test accuracy 0.9512 >= 0.93" in capsys.readouterr().out
