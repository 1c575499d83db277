"""The notebook-06 checks pass on reference solutions and fail on the stub and on typical mistakes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from coursekit.checks import finetuning as checks
from coursekit.checks.report import CheckFailed
from coursekit.losses import soft_iou_loss
from coursekit.models import finetune


def stub(*args):
    raise NotImplementedError


# ---------------------------------------------------------------- the fine-tuning model

class Wrapped(nn.Module):
    """The notebook's solution: wrap the network, freeze, new head, no aux head, frozen batch norm in eval."""

    def __init__(self, deeplab, num_classes, freeze=True, head=None, drop_aux=True, bn_eval=True, keep=True):
        super().__init__()
        if freeze:
            for parameter in deeplab.parameters():
                parameter.requires_grad_(False)
        deeplab.classifier[4] = head(num_classes) if head else nn.Conv2d(256, num_classes, 1)
        if drop_aux:
            deeplab.aux_classifier = None
        self.deeplab, self.bn_eval = deeplab, bn_eval
        if not keep:
            self.deeplab = checks._probe_deeplab(seed=99)

    def train(self, mode=True):
        super().train(mode)
        if self.bn_eval:
            for layer in self.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.eval()
        return self

    def forward(self, images):
        return self.deeplab(images)


class FrozenAfterHead(Wrapped):
    def __init__(self, deeplab, num_classes):
        deeplab.classifier[4] = nn.Conv2d(256, num_classes, 1)
        super().__init__(deeplab, num_classes)
        for parameter in self.parameters():
            parameter.requires_grad_(False)


class HeadBeforeFreezing(nn.Module):
    """Replaces the head, then freezes everything: nothing trains."""

    def __init__(self, deeplab, num_classes):
        super().__init__()
        deeplab.classifier[4] = nn.Conv2d(256, num_classes, 1)
        deeplab.aux_classifier = None
        finetune.freeze(deeplab)
        self.deeplab = deeplab

    def forward(self, images):
        return self.deeplab(images)


class AsppStillTrains(Wrapped):
    def __init__(self, deeplab, num_classes):
        super().__init__(deeplab, num_classes)
        self.deeplab.classifier[0].requires_grad_(True)


class NoTrainReturn(Wrapped):
    def train(self, mode=True):
        super().train(mode)


class ReinitialisesBackbone(Wrapped):
    def __init__(self, deeplab, num_classes):
        for layer in deeplab.backbone.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.zeros_(layer.weight)
        super().__init__(deeplab, num_classes)


def test_finetune_model_check_passes_on_the_reference(capsys):
    checks.check_finetune_model(Wrapped)
    checks.check_finetune_model(finetune.prepare_for_finetuning)
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("model_class, message", [
    (stub, "not implemented"),
    (lambda deeplab, k: deeplab, "still trains"),
    (lambda deeplab, k: Wrapped(deeplab, k, freeze=False), "frozen layer still trains"),
    (AsppStillTrains, "frozen layer still trains"),
    (HeadBeforeFreezing, "nothing in your model trains"),
    (FrozenAfterHead, "nothing in your model trains"),
    (lambda deeplab, k: Wrapped(deeplab, k, head=lambda k: nn.Conv2d(256, k, 3, padding=1)), "wrong shape"),
    (lambda deeplab, k: Wrapped(deeplab, k, head=lambda k: nn.Conv2d(256, 2, 1)), "wrong shape"),
    (lambda deeplab, k: Wrapped(deeplab, k, head=lambda k: nn.Conv2d(256, k, 1, bias=False)), "wrong shape"),
    (lambda deeplab, k: Wrapped(deeplab, k, drop_aux=False), "auxiliary head"),
    (lambda deeplab, k: Wrapped(deeplab, k, bn_eval=False), "batch norm left in train mode"),
    (lambda deeplab, k: Wrapped(deeplab, k, keep=False), "does not use the network"),
    (NoTrainReturn, "return the model itself"),
    (ReinitialisesBackbone, "changed the loaded weights"),
    (lambda deeplab, k: "model", "must be an nn.Module"),
])
def test_finetune_model_check_catches(model_class, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_finetune_model(model_class)


def test_batch_norm_statistics_are_checked_even_when_the_layers_report_eval_mode(monkeypatch):
    """A model whose batch norm claims eval mode but still updates its statistics fails on the step itself."""
    class Sneaky(Wrapped):
        def forward(self, images):
            for layer in self.modules():
                if isinstance(layer, nn.BatchNorm2d):
                    layer.training = torch.is_grad_enabled()
            return self.deeplab(images)

    with pytest.raises(CheckFailed, match="changed .* running statistic"):
        checks.check_finetune_model(Sneaky)


def test_checks_leave_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    checks.check_finetune_model(Wrapped)
    checks.check_soft_iou(soft_iou_loss)
    assert torch.equal(state, torch.random.get_rng_state())


# ---------------------------------------------------------------- trainable parameters

def test_trainable_parameters_check_passes_on_the_reference(capsys):
    checks.check_trainable_parameters(finetune.trainable_parameters)
    checks.check_trainable_parameters(lambda model: (p for p in model.parameters() if p.requires_grad))
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (stub, "not implemented"),
    (lambda model: list(model.parameters()), "includes frozen parameters"),
    (lambda model: model.parameters(), "includes frozen parameters"),
    (lambda model: list(model.classifier[4].parameters()), "raised AttributeError"),
    (lambda model: [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight")],
     "leaves out"),
    (lambda model: [p.detach().clone().requires_grad_() for p in model.parameters() if p.requires_grad],
     "not .*own parameters"),
    (lambda model: [(n, p) for n, p in model.named_parameters() if p.requires_grad], "pairs"),
    (lambda model: [p for p in model.parameters() if p.requires_grad] * 2, "twice"),
    (lambda model: None, "must return the parameters"),
    (lambda model: model, "must return the parameters"),
])
def test_trainable_parameters_check_catches(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_trainable_parameters(fn)


# ---------------------------------------------------------------- soft IoU loss

def iou_reference(logits, targets):
    # The notebook's solution: the formula, summed over the counted pixels of the batch.
    x = torch.softmax(logits, dim=1)[:, 1]
    y = (targets == 1).float()
    counted = (targets != 255).float()
    intersection = (x * y * counted).sum()
    union = ((x + y - x * y) * counted).sum()
    return 1 - intersection / union


def iou_hard(logits, targets):
    x = (logits.argmax(dim=1) == 1).float()
    y, counted = (targets == 1).float(), (targets != 255).float()
    return 1 - (x * y * counted).sum() / ((x + y - x * y) * counted).sum()


def iou_no_xy(logits, targets):
    x, y, counted = torch.softmax(logits, dim=1)[:, 1], (targets == 1).float(), (targets != 255).float()
    return 1 - (x * y * counted).sum() / ((x + y) * counted).sum()


def iou_void_counted(logits, targets):
    x, y = torch.softmax(logits, dim=1)[:, 1], (targets == 1).float()
    return 1 - (x * y).sum() / (x + y - x * y).sum()


def iou_background(logits, targets):
    return iou_reference(logits.flip(1), targets)


def iou_sigmoid(logits, targets):
    x, y, counted = torch.sigmoid(logits[:, 1]), (targets == 1).float(), (targets != 255).float()
    return 1 - (x * y * counted).sum() / ((x + y - x * y) * counted).sum()


def iou_per_image(logits, targets):
    return torch.stack([iou_reference(logits[i:i + 1], targets[i:i + 1]) for i in range(len(targets))]).mean()


def iou_detached(logits, targets):
    return iou_reference(logits.detach(), targets)


def test_soft_iou_check_passes_on_the_reference(capsys):
    checks.check_soft_iou(iou_reference)
    checks.check_soft_iou(soft_iou_loss)
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("loss_fn, message", [
    (stub, "not implemented"),
    (iou_hard, "hard labels"),
    (iou_no_xy, "X·Y"),
    (iou_void_counted, "ignored pixels"),
    (iou_background, "background channel"),
    (iou_sigmoid, "sigmoid"),
    (iou_per_image, "per image"),
    (iou_detached, "differentiable"),
    (lambda logits, targets: iou_reference(logits, targets).item(), "scalar tensor"),
    (lambda logits, targets: 1 - iou_reference(logits, targets), "wrong values"),
    (lambda logits, targets: torch.nn.functional.cross_entropy(logits, targets, ignore_index=255), "wrong values"),
])
def test_soft_iou_check_catches(loss_fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_soft_iou(loss_fn)
