"""Tests for coursekit.losses: cross-entropy against nn.CrossEntropyLoss, soft IoU against hand computations."""
import math

import pytest
import torch
from torch import nn

from coursekit.losses import cross_entropy, soft_iou_loss

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_problem(shape, dtype=torch.float32, ignore_every=0, seed=0):
    """Logits of ``shape`` (N×C×...) that need grad, and targets N×... with every k-th pixel 255."""
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(shape, generator=gen, dtype=dtype)).requires_grad_()
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    if ignore_every:
        target.view(-1)[::ignore_every] = 255
    return logits, target


# --- cross_entropy ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 4), (2, 3, 5, 6), (2, 5, 3, 2, 2)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_every", [0, 3])
def test_cross_entropy_matches_pytorch(shape, weighted, reduction, ignore_every):
    logits, target = random_problem(shape, ignore_every=ignore_every, seed=sum(shape))
    weight = torch.rand(shape[1], generator=torch.Generator().manual_seed(1)) + 0.1 if weighted else None
    ours = cross_entropy(logits, target, weight=weight, reduction=reduction)
    theirs = nn.CrossEntropyLoss(weight=weight, ignore_index=255, reduction=reduction)(logits, target)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6 * max(1.0, float(theirs.detach().abs().max())))
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-6)


def test_cross_entropy_float64_and_other_ignore_index():
    logits, target = random_problem((3, 4, 5, 5), dtype=torch.float64, seed=4)
    target[:, 0] = -100
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    ours = cross_entropy(logits, target, weight=weight, ignore_index=-100)
    theirs = nn.functional.cross_entropy(logits, target, weight=weight, ignore_index=-100)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_cross_entropy_ignore_index_none_counts_everything():
    logits, target = random_problem((6, 3), seed=5)
    ours = cross_entropy(logits, target, ignore_index=None)
    torch.testing.assert_close(ours, nn.functional.cross_entropy(logits, target))


def test_cross_entropy_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([0, 2])
    first = -math.log(math.exp(2) / (math.exp(2) + 2))
    second = math.log(3)
    assert float(cross_entropy(logits, target)) == pytest.approx((first + second) / 2, rel=1e-6)
    weighted = cross_entropy(logits, target, weight=torch.tensor([3.0, 1.0, 1.0]))
    assert float(weighted) == pytest.approx((3 * first + second) / 4, rel=1e-6)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], requires_grad=True)
    target = torch.tensor([1, 2])
    ours = cross_entropy(logits, target)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, nn.functional.cross_entropy(logits, target))
    ours.backward()
    assert torch.isfinite(logits.grad).all()


def test_cross_entropy_all_ignored_batch_is_nan_like_pytorch():
    logits, target = random_problem((2, 3, 4, 4), seed=6)
    target.fill_(255)
    mean = cross_entropy(logits, target)
    assert torch.isnan(mean) and torch.isnan(nn.functional.cross_entropy(logits, target, ignore_index=255))
    mean.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert cross_entropy(logits, target, reduction="sum").item() == 0.0
    assert torch.equal(cross_entropy(logits, target, reduction="none"), torch.zeros_like(target, dtype=torch.float))


def test_cross_entropy_rejects_bad_input():
    logits, target = random_problem((2, 3, 4, 4), seed=7)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        cross_entropy(logits, torch.full_like(target, 3))
    with pytest.raises(ValueError, match="expected"):
        cross_entropy(logits, target[:, :2])
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(logits, target.float())
    with pytest.raises(TypeError, match="floating-point"):
        cross_entropy(target, target[:, 0])
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, target, reduction="average")
    with pytest.raises(ValueError, match="one value per class"):
        cross_entropy(logits, target, weight=torch.ones(4))
    with pytest.raises(ValueError, match="batch dimension"):
        cross_entropy(torch.zeros(3), torch.tensor(1))


@cuda_only
def test_cross_entropy_on_cuda():
    logits, target = random_problem((2, 4, 8, 8), ignore_every=5, seed=8)
    weight = torch.arange(1.0, 5.0)
    ours = cross_entropy(logits.detach().cuda(), target.cuda(), weight=weight.cuda())
    assert ours.device.type == "cuda"
    theirs = nn.functional.cross_entropy(logits, target, weight=weight, ignore_index=255)
    torch.testing.assert_close(ours.cpu(), theirs, rtol=0, atol=1e-6)


# --- soft_iou_loss -----------------------------------------------------------------------------

def binary_target(seed=0):
    return torch.randint(0, 2, (2, 6, 6), generator=torch.Generator().manual_seed(seed))


def confident_logits(target, num_channels, margin=50.0):
    """Logits N×C×H×W that put (almost) all probability on ``target`` (C = 1: sigmoid logits)."""
    if num_channels == 1:
        return ((2 * target.float() - 1) * margin).unsqueeze(1)
    return nn.functional.one_hot(target, num_channels).permute(0, 3, 1, 2).float() * margin


@pytest.mark.parametrize("num_channels", [1, 2, 4])
def test_soft_iou_perfect_and_completely_wrong(num_channels):
    target = binary_target() if num_channels <= 2 else torch.randint(0, 4, (2, 6, 6))
    assert float(soft_iou_loss(confident_logits(target, num_channels), target)) == pytest.approx(0.0, abs=1e-5)
    wrong = (target + 1) % max(num_channels, 2)
    assert float(soft_iou_loss(confident_logits(wrong, num_channels), target)) == pytest.approx(1.0, abs=1e-5)


def test_soft_iou_matches_hand_computation_binary():
    probs = torch.tensor([0.9, 0.2, 0.6, 0.5])
    target = torch.tensor([1, 0, 1, 0]).view(1, 2, 2)
    logits = torch.logit(probs).view(1, 1, 2, 2)
    intersection = 0.9 + 0.6
    union = probs.sum().item() + 2 - intersection
    expected = 1 - intersection / union  # = 1 - 1.5 / 2.7
    assert float(soft_iou_loss(logits, target, eps=0.0)) == pytest.approx(expected, rel=1e-6)
    two_channel = torch.cat([torch.zeros_like(logits), logits], dim=1)  # softmax(0, z)[1] = sigmoid(z)
    assert float(soft_iou_loss(two_channel, target, eps=0.0)) == pytest.approx(expected, rel=1e-6)


def test_soft_iou_matches_hand_computation_multiclass():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])  # two pixels, three classes
    logits = probs.log().T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    iou = [0.7 / (0.8 + 1 - 0.7), 0.1 / (0.3 + 1 - 0.1), 0.0 / 0.9]
    expected = sum(1 - value for value in iou) / 3
    assert float(soft_iou_loss(logits, target, eps=0.0)) == pytest.approx(expected, rel=1e-6)


def test_soft_iou_ignore_mask_removes_pixels():
    target = binary_target(seed=1)
    logits = confident_logits(target, 1)
    logits[0, 0, :2] *= -1  # two wrong rows ...
    assert float(soft_iou_loss(logits, target)) > 0.1
    target[0, :2] = 255  # ... that the mask then hides
    assert float(soft_iou_loss(logits, target)) == pytest.approx(0.0, abs=1e-5)
    changed = logits.clone()
    changed[0, 0, :2] = torch.randn(2, 6)  # predictions at ignored pixels do not matter
    assert float(soft_iou_loss(changed, target)) == pytest.approx(float(soft_iou_loss(logits, target)), abs=1e-7)


def test_soft_iou_gradient_flows_and_skips_ignored_pixels():
    target = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(2))
    target[:, 0] = 255
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    soft_iou_loss(logits, target).backward()
    assert logits.grad.abs()[:, :, 1:].sum() > 0
    assert torch.equal(logits.grad[:, :, 0], torch.zeros_like(logits.grad[:, :, 0]))


def test_soft_iou_decreases_with_gradient_descent():
    target = binary_target(seed=3)
    logits = torch.zeros(2, 1, 6, 6, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=50.0)
    first = soft_iou_loss(logits, target).item()
    for _ in range(20):
        optimizer.zero_grad()
        soft_iou_loss(logits, target).backward()
        optimizer.step()
    assert soft_iou_loss(logits, target).item() < first / 2


def test_soft_iou_rejects_bad_input():
    target = binary_target()
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        soft_iou_loss(torch.zeros(2, 1, 6, 6), target + 1)
    with pytest.raises(ValueError, match="dense logits"):
        soft_iou_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match"):
        soft_iou_loss(torch.zeros(2, 1, 5, 6), target)


@cuda_only
def test_soft_iou_on_cuda():
    target = torch.randint(0, 3, (2, 5, 5))
    logits = torch.randn(2, 3, 5, 5)
    on_gpu = soft_iou_loss(logits.cuda(), target.cuda())
    assert on_gpu.device.type == "cuda"
    assert float(on_gpu) == pytest.approx(float(soft_iou_loss(logits, target)), abs=1e-6)
