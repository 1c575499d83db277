"""Tests of coursekit.numpy_nn, the NumPy network of notebook 02."""
import copy

import numpy as np
import pytest

from coursekit import numpy_nn as nn
from coursekit.data.mnist import load_mnist

SIZES = [6, 5, 4, 3]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, SIZES[0]))
    labels = rng.integers(0, SIZES[-1], size=8)
    return X, labels, np.eye(SIZES[-1])[labels]


def test_make_toy_dataset_shapes_balance_and_seed():
    X, y = nn.make_toy_dataset(101, seed=3)
    assert X.shape == (101, 2) and X.dtype == np.float64
    assert y.shape == (101,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [50, 51]
    X2, y2 = nn.make_toy_dataset(101, seed=3)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert not np.array_equal(X, nn.make_toy_dataset(101, seed=4)[0])
    with pytest.raises(ValueError, match="at least 2"):
        nn.make_toy_dataset(1)


def test_make_toy_dataset_is_not_linearly_separable():
    X, y = nn.make_toy_dataset(400, noise=0.0, seed=0)
    linear = nn.initialize_network([2, 2], seed=0)
    nn.train(linear, X, y, epochs=100, learning_rate=1.0, batch_size=20)
    assert nn.accuracy(nn.predict(linear, X), y) < 0.95


def test_initialize_network_shapes_spread_and_seed():
    network = nn.initialize_network([400, 300, 10], seed=0)
    assert [layer["W"].shape for layer in network] == [(400, 300), (300, 10)]
    assert [layer["b"].shape for layer in network] == [(300,), (10,)]
    assert all(not layer["b"].any() for layer in network)
    assert network[0]["W"].std() == pytest.approx(np.sqrt(2 / 700), rel=0.02)
    assert np.array_equal(network[0]["W"], nn.initialize_network([400, 300, 10], seed=0)[0]["W"])
    assert not np.array_equal(network[0]["W"], nn.initialize_network([400, 300, 10], seed=1)[0]["W"])
    assert {a.dtype for layer in network for a in layer.values()} == {np.dtype(np.float32)}  # the default
    wide = nn.initialize_network([400, 300, 10], seed=0, dtype=np.float64)
    assert {a.dtype for layer in wide for a in layer.values()} == {np.dtype(np.float64)}
    assert np.allclose(wide[0]["W"], network[0]["W"], rtol=1e-6)  # the same draws, only rounded


def test_cross_entropy_stays_finite_when_a_float32_probability_underflows():
    outputs = np.array([[1.0, 0.0]], dtype=np.float32)  # softmax of (0, -200) in float32
    loss = nn.compute_loss(outputs, np.array([[0.0, 1.0]], dtype=np.float32))
    assert np.isfinite(loss) and loss == pytest.approx(-np.log(np.finfo(np.float32).tiny))


@pytest.mark.parametrize("sizes", [[5], [], [5, 0], [5, 2.5]])
def test_initialize_network_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        nn.initialize_network(sizes)


def test_pre_activation_is_affine():
    rng = np.random.default_rng(1)
    x, W, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    expected = np.array([[x[n] @ W[:, k] + b[k] for k in range(2)] for n in range(4)])
    np.testing.assert_allclose(nn.pre_activation(x, W, b), expected)


def test_sigmoid_activation_values_and_no_overflow():
    z = np.linspace(-20, 20, 41)
    np.testing.assert_allclose(nn.sigmoid_activation(z), 1 / (1 + np.exp(-z)), rtol=1e-12, atol=1e-15)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        extremes = nn.sigmoid_activation(np.array([-1e4, -800.0, 0.0, 800.0, 1e4]))
    np.testing.assert_array_equal(extremes, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_sigmoid_derivative_matches_finite_difference():
    z = np.linspace(-4, 4, 9)
    numerical = (nn.sigmoid_activation(z + 1e-6) - nn.sigmoid_activation(z - 1e-6)) / 2e-6
    np.testing.assert_allclose(nn.sigmoid_derivative(nn.sigmoid_activation(z)), numerical, rtol=1e-7)


def test_softmax_normalised_shift_invariant_and_stable():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, 4))
    p = nn.softmax(z)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(nn.softmax(z + 1000.0), p, rtol=1e-12)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        big = nn.softmax(np.array([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_allclose(big, [[1.0, 0.0, 0.0]])


def test_forward_propagation_outputs_per_loss(batch):
    X, _, _ = batch
    network = nn.initialize_network(SIZES, seed=0)
    ce = nn.forward_propagation(network, X)
    assert len(ce) == len(SIZES) and ce[0] is X
    assert [a.shape for a in ce] == [(8, n) for n in SIZES]
    np.testing.assert_allclose(ce[-1].sum(axis=1), 1.0)
    mse = nn.forward_propagation(network, X, loss="mse")
    np.testing.assert_allclose(mse[1], ce[1])
    assert not np.allclose(mse[-1].sum(axis=1), 1.0) and np.all((mse[-1] > 0) & (mse[-1] < 1))
    with pytest.raises(ValueError, match="cross_entropy"):
        nn.forward_propagation(network, X, loss="hinge")


def test_compute_loss_known_values():
    targets = np.eye(4)[[0, 3]]
    assert nn.compute_loss(np.full((2, 4), 0.25), targets) == pytest.approx(np.log(4))
    assert nn.compute_loss(targets, targets) == pytest.approx(0.0)
    assert nn.compute_loss(np.zeros((2, 4)), targets, loss="mse") == pytest.approx(0.5)
    assert np.isfinite(nn.compute_loss(1 - targets, targets))
    with pytest.raises(ValueError, match="one-hot"):
        nn.compute_loss(np.zeros((2, 4)), np.array([0, 3]))


@pytest.mark.parametrize("loss", nn.LOSSES)
def test_backward_propagate_error_passes_gradient_check(batch, loss):
    X, _, targets = batch
    network = nn.initialize_network(SIZES, seed=0)
    gradients = nn.backward_propagate_error(network, nn.forward_propagation(network, X, loss), targets, loss)
    assert [set(g) for g in gradients] == [{"W", "b"}] * 3
    assert [g["W"].shape for g in gradients] == [layer["W"].shape for layer in network]
    errors = nn.gradient_check(network, X, targets, gradients, loss=loss)
    assert list(errors) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert max(errors.values()) < 1e-6


def test_backward_propagate_error_rejects_label_targets(batch):
    X, labels, _ = batch
    network = nn.initialize_network(SIZES, seed=0)
    with pytest.raises(ValueError, match="one-hot"):
        nn.backward_propagate_error(network, nn.forward_propagation(network, X), labels)


def test_gradient_check_mnist_sized_network_below_1e_6():
    rng = np.random.default_rng(5)
    X, labels = rng.random((4, 784)), rng.integers(0, 10, size=4)
    network = nn.initialize_network([784, 500, 50, 10], seed=0)
    targets = np.eye(10)[labels]
    gradients = nn.backward_propagate_error(network, nn.forward_propagation(network, X), targets)
    errors = nn.gradient_check(network, X, targets, gradients, max_entries=10)
    assert max(errors.values()) < 1e-6


def test_gradient_check_catches_wrong_gradients(batch):
    X, _, targets = batch
    network = nn.initialize_network(SIZES, seed=0)
    gradients = nn.backward_propagate_error(network, nn.forward_propagation(network, X), targets)
    gradients[1]["W"] = gradients[1]["W"] * 2
    errors = nn.gradient_check(network, X, targets, gradients)
    assert errors["W2"] == pytest.approx(1 / 3, rel=1e-4)
    assert errors["W1"] < 1e-6
    with pytest.raises(ValueError, match="shape"):
        nn.gradient_check(network, X, targets, [{"W": g["W"].T, "b": g["b"]} for g in gradients])


def test_numerical_gradients_samples_entries_and_keeps_network(batch):
    X, _, targets = batch
    network = nn.initialize_network(SIZES, seed=0)
    before = copy.deepcopy(network)
    numerical = nn.numerical_gradients(network, X, targets, max_entries=3)
    assert [len(n["W"][0]) for n in numerical] == [3, 3, 3]
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(before, network) for k in "Wb")
    analytic = nn.backward_propagate_error(network, nn.forward_propagation(network, X), targets)
    indices, values = numerical[0]["W"]
    np.testing.assert_allclose(values, analytic[0]["W"].reshape(-1)[indices], rtol=1e-6, atol=1e-10)


def test_update_weights_in_place():
    network = nn.initialize_network([3, 2], seed=0)
    W, b = network[0]["W"], network[0]["b"]
    expected_W = W - 0.5 * np.ones_like(W)
    result = nn.update_weights(network, [{"W": np.ones_like(W), "b": np.full(2, 2.0)}], 0.5)
    assert result is network and network[0]["W"] is W
    np.testing.assert_allclose(W, expected_W)
    np.testing.assert_allclose(b, [-1.0, -1.0])


def test_predict_accuracy_and_evaluate(batch):
    X, labels, targets = batch
    network = nn.initialize_network(SIZES, seed=0)
    predictions = nn.predict(network, X)
    assert predictions.shape == (8,) and predictions.dtype == np.int64
    assert np.array_equal(predictions, nn.forward_propagation(network, X)[-1].argmax(axis=1))
    assert nn.accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape"):
        nn.accuracy(predictions, labels[:3])
    loss, acc = nn.evaluate(network, X, labels, batch_size=3)
    assert loss == pytest.approx(nn.compute_loss(nn.forward_propagation(network, X)[-1], targets))
    assert acc == nn.accuracy(predictions, labels)


def test_train_learns_toy_data_deterministically():
    X, y = nn.make_toy_dataset(200, seed=0)
    X_val, y_val = nn.make_toy_dataset(200, seed=1)
    histories = []
    for _ in range(2):
        network = nn.initialize_network([2, 16, 2], seed=0)
        histories.append(nn.train(network, X, y, epochs=250, learning_rate=1.0, batch_size=10,
                                  validation=(X_val, y_val)))
    assert histories[0] == histories[1]
    history = histories[0]
    assert set(history) == {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 250 for v in history.values())
    assert history["train_loss"][-1] < 0.3 * history["train_loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert (history["val_loss"][-1], history["val_accuracy"][-1]) == nn.evaluate(network, X_val, y_val)


def test_train_mse_also_learns():
    X, y = nn.make_toy_dataset(200, seed=0)
    network = nn.initialize_network([2, 16, 2], seed=0)
    history = nn.train(network, X, y, epochs=100, learning_rate=2.0, batch_size=10, loss="mse")
    assert history["train_loss"][-1] < 0.6 * history["train_loss"][0]
    assert history["train_accuracy"][-1] > 0.8


def test_train_rejects_bad_labels_and_shapes():
    network = nn.initialize_network([2, 3, 2], seed=0)
    X, y = nn.make_toy_dataset(10)
    with pytest.raises(ValueError, match="integer labels"):
        nn.train(network, X, np.eye(2)[y], epochs=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="one label per row"):
        nn.train(network, X[:5], y, epochs=1, learning_rate=0.1)


def test_train_on_mnist_subset_beats_chance_by_far(mirror):
    images, labels = load_mnist("train")
    X, y = images[:1500], labels[:1500]
    X_val, y_val = images[1500:2000], labels[1500:2000]
    network = nn.initialize_network([784, 64, 10], seed=0)
    history = nn.train(network, X, y, epochs=5, learning_rate=0.5, batch_size=32, validation=(X_val, y_val))
    assert history["val_accuracy"][-1] > 0.8
