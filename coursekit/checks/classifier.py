"""Checks for notebook 03 (CIFAR-10 classifier).

* ``check_net(Net)``                    the handout's architecture, layer by layer
* ``check_training_step(training_step)`` one SGD step, step after step, like the reference
* ``check_accuracy(accuracy)``          accuracy over the evaluated loader, in eval mode, without autograd

Each runs the student's code on small seeded inputs next to the kit's
reference (``coursekit.models.classifier.Net``, ``coursekit.engine``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .. import config, engine
from ..models.classifier import Net
from .report import expect, expect_close, expect_number, fail, passed, run_student

_NET_HINT = ("follow the handout: conv1 = Conv2d(3, 6, 5), pool = MaxPool2d(2, 2), conv2 = Conv2d(6, 16, 5), "
             "fc1 = Linear(16 * 5 * 5, 120), fc2 = Linear(120, 84), fc3 = Linear(84, 10); "
             "ReLU after conv1, conv2, fc1 and fc2, and max-pool after each ReLU of a convolution.")


def _images(n: int, seed: int) -> torch.Tensor:
    """Seeded standard-normal images, float32 ``n×3×32×32``."""
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _as_module(net, what: str) -> nn.Module:
    """The student's network: an instance, or one made from a class (called with no arguments)."""
    module = run_student(what, net) if isinstance(net, type) else net
    expect(isinstance(module, nn.Module), f"{what} must be an nn.Module", "a subclass of torch.nn.Module",
           type(module).__name__, "write `class Net(nn.Module):` and call `super().__init__()` first.")
    return module


def check_net(net) -> None:
    """Check the student's ``Net`` (class or instance) against the handout's network.

    It must map float32 ``N×3×32×32`` to ``N×10`` logits, have the reference's
    parameters (same shapes, same order, 62,006 in all) and, given the
    reference's weights, compute the same function (ReLUs and pooling in place).
    """
    student = _as_module(net, "Net()")
    reference = Net()
    images = _images(4, seed=0)
    try:
        with torch.no_grad():
            out = run_student("Net.forward", student.cpu().eval(), images)
    except RuntimeError as error:
        fail("Net failed on a batch of four 3×32×32 images", "logits of shape (4, 10)", f"RuntimeError: {error}",
             "after the second pooling the feature map is 16×5×5; flatten it with torch.flatten(x, 1) "
             "and give fc1 16 * 5 * 5 = 400 inputs.")
    expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (4, 10), "Net's output shape", (4, 10),
           tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__,
           "return the logits of fc3 (10 classes) for every image; no softmax, the loss applies it.")
    got_shapes = [tuple(p.shape) for p in student.parameters()]
    want_shapes = [tuple(p.shape) for p in reference.parameters()]
    count = sum(p.numel() for p in student.parameters())
    expect(got_shapes == want_shapes, "Net's layers (parameter shapes in order)", want_shapes, got_shapes,
           f"{_NET_HINT} (you have {count:,} parameters, the handout's network has 62,006.)")
    with torch.no_grad():
        for mine, theirs in zip(reference.parameters(), student.parameters()):
            theirs.copy_(mine)
        expect_close("Net's output with the reference's weights", reference.eval()(images), student(images),
                     "the layers are right but the computation differs: " + _NET_HINT, rtol=1e-4, atol=1e-5)
    passed("Net")


def _clone_pair(seed: int) -> tuple[nn.Module, nn.Module]:
    """Two identical, seeded copies of the reference ``Net`` (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Net()
    return model, copy.deepcopy(model)


def check_training_step(training_step, steps: int = 10) -> None:
    """Check ``training_step(model, images, labels, loss_fn, optimizer) -> float``.

    It must do one optimisation step exactly like ``engine.train_step``
    (forward, loss, zero the gradients, backward, update) and return the
    batch's loss as a Python float; repeated on one fixed batch, the loss must
    go down.
    """
    images = _images(16, seed=1)
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    loss_fn = nn.CrossEntropyLoss()
    model, reference = _clone_pair(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        before = [p.detach().clone() for p in model.parameters()]
        got = run_student("training_step", training_step, model, images, labels, loss_fn, optimizer)
        want, _ = engine.train_step(reference, images, labels, ref_optimizer, loss_fn)
        expect(isinstance(got, float), "training_step must return the loss as a Python float", "float",
               type(got).__name__, "return loss.item(): a number, not a tensor that keeps the graph alive.")
        expect(not all(torch.equal(b, p) for b, p in zip(before, model.parameters())),
               f"step {step + 1} did not change the weights", "updated parameters", "unchanged parameters",
               "call loss.backward() and then optimizer.step().")
        same = all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(model.parameters(), reference.parameters()))
        hint = ("call optimizer.zero_grad() before loss.backward(): otherwise each step adds the new gradient "
                "to the old ones." if step > 0 else
                "compute loss_fn(model(images), labels), then optimizer.zero_grad(), loss.backward(), optimizer.step().")
        expect(same, f"the weights after step {step + 1} differ from the reference's", "the reference's update",
               "a different update", hint)
        expect_close(f"the loss returned at step {step + 1}", want, got,
                     "return the loss of this batch computed before the update (loss.item()).", rtol=1e-4)
        losses.append(got)
    expect(losses[-1] < losses[0], f"the loss on one fixed batch after {steps} steps", f"below {losses[0]:.4f}",
           f"{losses[-1]:.4f}", "the update must go against the gradient: optimizer.step() after loss.backward().")
    passed("training_step")


class _ProbeClassifier(nn.Module):
    """A fixed linear classifier with heavy dropout that records how it is called.

    In eval mode it is deterministic; in train mode dropout changes its
    predictions, so forgetting ``model.eval()`` shows in the accuracy.
    """

    def __init__(self, seed: int = 4):
        super().__init__()
        self.dropout = nn.Dropout(0.9)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear = nn.Linear(3 * 32 * 32, 10)
        self.calls: list[tuple[bool, bool]] = []  # (training, grad enabled) per forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.linear(self.dropout(torch.flatten(x, 1)))


def check_accuracy(accuracy, num_images: int = 250, batch_size: int = 64) -> None:
    """Check ``accuracy(model, loader) -> float``: the fraction of correctly classified images.

    The loader holds ``num_images`` images in batches of ``batch_size`` (the
    last one smaller). The answer must be a fraction in [0, 1] over exactly
    the images of that loader (not the training set's size, not a mean of
    per-batch accuracies), computed in eval mode without autograd.
    """
    device = config.get_device()
    model = _ProbeClassifier().to(device)
    images = _images(num_images, seed=5)
    with torch.no_grad():
        labels = model.eval()(images.to(device)).argmax(dim=1).cpu()
    labels[::3] = (labels[::3] + 1) % 10  # a third of the answers wrong: accuracy about 2/3
    # Its own generator: iterating a DataLoader otherwise draws a seed from the global random state.
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size, generator=torch.Generator())
    want = engine.evaluate(model, loader, num_classes=10, device=device)["accuracy"]
    model.calls.clear()
    model.train()
    got = run_student("accuracy", accuracy, model, loader)
    got = expect_number("accuracy must return a number", got, "a float in [0, 1]",
                        "return correct / total as a Python float.")
    expect(model.calls, "accuracy never called the model", "model(images) for every batch", "no calls",
           "loop over the loader and compare model(images).argmax(dim=1) with the labels.")
    expect(not any(training for training, _ in model.calls), "the model ran in training mode",
           "model.eval() before evaluating", "dropout/batch norm in training mode",
           "call model.eval() first: dropout and batch norm behave differently when evaluating.")
    expect(not any(grad for _, grad in model.calls), "autograd was recording during evaluation",
           "no gradient tracking", "torch.is_grad_enabled() was True",
           "wrap the loop in `with torch.no_grad():` (or torch.inference_mode()): it saves memory and time.")
    if 1.0 < got <= 100.0 and abs(got / 100.0 - want) < 1e-6:
        fail("accuracy returned a percentage", f"{want:.4f}", got, "return a fraction in [0, 1]: correct / total.")
    if got and abs(got - want) > 1e-6:
        denominator = want * num_images / got
        if abs(denominator / num_images - 1) > 0.05:
            hint = (f"your value equals {round(want * num_images)} correct / {denominator:.0f}, but the loader "
                    f"holds {num_images} images: divide by the number of images evaluated (len(loader.dataset), "
                    "or add up labels.size(0) per batch), not by the training set's size.")
        else:
            hint = ("close, but not the accuracy over all images: add up the correct predictions and the images "
                    "over every batch and divide once at the end; a mean of per-batch accuracies gives the "
                    "smaller last batch too much weight.")
        fail("accuracy over the loader", f"{want:.6f}", f"{got:.6f}", hint)
    expect_close("accuracy over the loader", want, got, "count the correct predictions over every batch.")
    passed("accuracy")
