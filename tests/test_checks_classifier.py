"""Checks of notebook 03 pass on the reference and fail on stubs and typical mistakes."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checks import classifier as checks
from coursekit.checks.report import CheckFailed
from coursekit.models.classifier import Net


# ---------- check_net ----------

class StubNet(nn.Module):
    def forward(self, x):
        raise NotImplementedError


class NoReluNet(Net):
    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class WrongFlattenNet(Net):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16 * 4 * 4, 120)


class WideNet(Net):
    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(6, 32, 5)
        self.fc1 = nn.Linear(32 * 5 * 5, 120)


def test_check_net_passes_on_the_reference(capsys):
    checks.check_net(Net)
    checks.check_net(Net())
    assert capsys.readouterr().out.count("check passed: Net") == 2


@pytest.mark.parametrize("bad, message", [
    (StubNet, "not implemented"),
    (NoReluNet, "computation differs"),
    (WrongFlattenNet, "16 \\* 5 \\* 5"),
    (WideNet, "parameter shapes"),
    (lambda: "not a module", "nn.Module"),
])
def test_check_net_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_net(bad)


# ---------- check_training_step ----------

def good_step(model, images, labels, loss_fn, optimizer):
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def stub_step(model, images, labels, loss_fn, optimizer):
    raise NotImplementedError


def no_zero_grad(model, images, labels, loss_fn, optimizer):
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.item()


def no_step(model, images, labels, loss_fn, optimizer):
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    return loss.item()


def returns_tensor(model, images, labels, loss_fn, optimizer):
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def loss_after_update(model, images, labels, loss_fn, optimizer):
    good_step(model, images, labels, loss_fn, optimizer)
    with torch.no_grad():
        return loss_fn(model(images), labels).item()


def test_check_training_step_passes_on_the_reference(capsys):
    checks.check_training_step(good_step)
    assert "check passed: training_step" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (stub_step, "not implemented"),
    (no_zero_grad, "zero_grad"),
    (no_step, "did not change the weights"),
    (returns_tensor, "Python float"),
    (loss_after_update, "before the update"),
])
def test_check_training_step_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_training_step(bad)


# ---------- check_accuracy ----------

TRAIN_SET_SIZE = 10000


def _device_of(model):
    return next(model.parameters()).device


def good_accuracy(model, loader):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(_device_of(model)), labels.to(_device_of(model))
            correct += (model(images).argmax(dim=1) == labels).sum().item()
            total += labels.size(0)
    return correct / total


def divides_by_train_size(model, loader):  # the handout's bug
    return good_accuracy(model, loader) * len(loader.dataset) / TRAIN_SET_SIZE


def as_percentage(model, loader):
    return 100 * good_accuracy(model, loader)


def forgets_eval(model, loader):
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images.to(_device_of(model))).argmax(dim=1).cpu() == labels).sum().item()
    return correct / len(loader.dataset)


def forgets_no_grad(model, loader):
    model.eval()
    correct = 0
    for images, labels in loader:
        correct += (model(images.to(_device_of(model))).argmax(dim=1).cpu() == labels).sum().item()
    return correct / len(loader.dataset)


def mean_of_batch_accuracies(model, loader):
    model.eval()
    scores = []
    with torch.no_grad():
        for images, labels in loader:
            predictions = model(images.to(_device_of(model))).argmax(dim=1).cpu()
            scores.append((predictions == labels).float().mean().item())
    return sum(scores) / len(scores)


def stub_accuracy(model, loader):
    raise NotImplementedError


def test_check_accuracy_passes_on_the_reference(capsys):
    checks.check_accuracy(good_accuracy)
    checks.check_accuracy(lambda m, l: torch.tensor(good_accuracy(m, l)))  # a 0-d tensor is fine too
    assert capsys.readouterr().out.count("check passed: accuracy") == 2


@pytest.mark.parametrize("bad, message", [
    (stub_accuracy, "not implemented"),
    (divides_by_train_size, "250 images.*training set"),
    (as_percentage, "percentage"),
    (forgets_eval, "model.eval"),
    (forgets_no_grad, "no_grad"),
    (mean_of_batch_accuracies, "per-batch accuracies"),
    (lambda m, l: "0.5", "return a number"),
])
def test_check_accuracy_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_accuracy(bad)


def test_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.check_training_step(good_step)
    checks.check_accuracy(good_accuracy)
    assert torch.equal(torch.random.get_rng_state(), state)
