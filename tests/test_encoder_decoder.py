"""The ResNet encoder-decoder: sizes, loss in training mode, pretrained encoder, errors. No network."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from coursekit.models.encoder_decoder import ResNetEncoderDecoder
from coursekit.models.pretrained import PretrainedWeightsUnavailable


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNetEncoderDecoder(num_classes=5, pretrained=False)


def _batch(n, h, w, num_classes=5):
    torch.manual_seed(1)
    targets = torch.randint(0, num_classes, (n, h, w))
    targets[:, :3] = 255  # a void band
    return torch.randn(n, 3, h, w), targets


@pytest.mark.parametrize("size", [(37, 53), (64, 80), (100, 123), (1, 1)])
def test_eval_logits_have_the_input_size(model, size):
    model.eval()
    images, _ = _batch(1, *size)
    with torch.inference_mode():
        logits = model(images)
    assert logits.shape == (1, 5, *size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_training_mode_returns_the_cross_entropy_loss(model):
    images, targets = _batch(2, 40, 56)
    model.train()
    loss = model(images, targets)
    assert loss.dim() == 0
    expected = F.cross_entropy(model(images), targets, ignore_index=255)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.stem[0].weight.grad.abs().sum() > 0 and model.classifier.weight.grad.abs().sum() > 0
    model.zero_grad()


def test_logits_otherwise(model):
    images, targets = _batch(2, 33, 47)
    model.train()
    assert model(images).shape == (2, 5, 33, 47)
    model.eval()
    with torch.inference_mode():
        assert model(images, targets).shape == (2, 5, 33, 47)


def test_custom_criterion_is_used():
    seen = []

    def criterion(logits, targets):
        seen.append((logits.shape, targets.shape))
        return logits.mean()

    net = ResNetEncoderDecoder(num_classes=3, pretrained=False, criterion=criterion).train()
    images, targets = _batch(2, 32, 32, num_classes=3)
    net(images, targets)
    assert seen == [((2, 3, 32, 32), (2, 32, 32))]


def test_decoder_reads_layer4_and_the_layer2_skip(model):
    assert model.fuse[0].in_channels == 512 + 128
    assert model.classifier.out_channels == 5


def test_resnet50_backbone_channels():
    net = ResNetEncoderDecoder(num_classes=4, backbone="resnet50", pretrained=False).eval()
    assert net.fuse[0].in_channels == 2048 + 512
    with torch.inference_mode():
        assert net(torch.randn(1, 3, 45, 61)).shape == (1, 4, 45, 61)


def test_pretrained_encoder_comes_from_the_hub_cache(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    torch.manual_seed(3)
    state = models.resnet18(weights=None).state_dict()
    offline_hub.checkpoints.mkdir(parents=True)
    torch.save(state, offline_hub.checkpoints / "resnet18-f37072fd.pth")
    net = ResNetEncoderDecoder(num_classes=21)
    assert torch.equal(net.stem[0].weight, state["conv1.weight"])
    assert torch.equal(net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert offline_hub.calls == []


def test_offline_pretrained_encoder_per_profile(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    ResNetEncoderDecoder(num_classes=21, pretrained=True)
    assert "NOTE: pretrained ResNet-18 weights are not available offline" in capsys.readouterr().out
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    with pytest.raises(PretrainedWeightsUnavailable, match="allow_random=True"):
        ResNetEncoderDecoder(num_classes=21, pretrained=True)
    ResNetEncoderDecoder(num_classes=21, pretrained=True, allow_random=True)
    assert "NOTE:" in capsys.readouterr().out


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="resnet18"):
        ResNetEncoderDecoder(backbone="vgg16", pretrained=False)
    with pytest.raises(ValueError, match="positive int"):
        ResNetEncoderDecoder(num_classes=0, pretrained=False)
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(3, 32, 32))
