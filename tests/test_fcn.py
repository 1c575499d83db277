"""FCN-32s / FCN-8s: bilinear upsampling weights, output size for any input, VGG16 weight copy.

Shape tests run on the ``meta`` device (no memory, no arithmetic); only a
couple of real forward passes are made, on small images.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision import models

from coursekit.models import fcn as fcn_module
from coursekit.models.fcn import FCN8s, FCN32s, copy_params_from_vgg16, get_upsampling_weight
from coursekit.models.summary import count_parameters


@pytest.fixture(scope="module")
def meta_models():
    with torch.device("meta"):
        return {"FCN8s": FCN8s(21), "FCN32s": FCN32s(21)}


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return models.vgg16(weights=None)


def test_upsampling_weight_is_a_bilinear_tent_per_channel():
    weight = get_upsampling_weight(3, 3, 4)
    assert weight.shape == (3, 3, 4, 4) and weight.dtype == torch.float32
    tent = torch.tensor([0.25, 0.75, 0.75, 0.25])
    for c in range(3):
        torch.testing.assert_close(weight[c, c], torch.outer(tent, tent))
    off_diagonal = weight.clone()
    off_diagonal[range(3), range(3)] = 0
    assert not off_diagonal.any()
    torch.testing.assert_close(get_upsampling_weight(1, 1, 3)[0, 0, 1], torch.tensor([0.5, 1.0, 0.5]))


def test_upsampling_weight_interpolates_linearly():
    """Stride-2 transposed convolution with the tent reproduces a ramp away from the borders."""
    up = nn.ConvTranspose2d(1, 1, 4, stride=2, bias=False)
    with torch.no_grad():
        up.weight.copy_(get_upsampling_weight(1, 1, 4))
        ramp = torch.arange(8.0).repeat(8, 1).view(1, 1, 8, 8)
        out = up(ramp)[0, 0, 2:-2, 2:-2]  # 14×14 interior of the 18×18 output
    expected = (torch.arange(14.0) + 1.5) / 2 - 0.5  # columns sample the ramp at half steps
    torch.testing.assert_close(out, expected.repeat(14, 1))


def test_upsampling_weight_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="same number of channels"):
        get_upsampling_weight(2, 3, 4)


@pytest.mark.parametrize("name", ["FCN8s", "FCN32s"])
@pytest.mark.parametrize("size", [(37, 53), (64, 80), (100, 123), (1, 1), (31, 33), (500, 375)])
def test_output_has_the_input_size(meta_models, name, size):
    x = torch.empty(2, 3, *size, device="meta")
    assert meta_models[name](x).shape == (2, 21, *size)


def test_layers_follow_the_handout(meta_models):
    fcn8 = meta_models["FCN8s"]
    assert fcn8.conv1_1.padding == (100, 100)
    assert all(getattr(fcn8, f"pool{i}").ceil_mode for i in range(1, 6))
    assert fcn8.fc6.kernel_size == (7, 7) and fcn8.fc6.out_channels == 4096
    assert fcn8.fc7.kernel_size == (1, 1)
    assert (fcn8.upscore2.kernel_size, fcn8.upscore2.stride) == ((4, 4), (2, 2))
    assert (fcn8.upscore_pool4.kernel_size, fcn8.upscore_pool4.stride) == ((4, 4), (2, 2))
    assert (fcn8.upscore8.kernel_size, fcn8.upscore8.stride) == ((16, 16), (8, 8))
    upscore = meta_models["FCN32s"].upscore
    assert (upscore.kernel_size, upscore.stride) == ((64, 64), (32, 32))


def test_parameter_counts_and_frozen_final_upsampling(meta_models):
    fcn8, fcn32 = meta_models["FCN8s"], meta_models["FCN32s"]
    assert count_parameters(fcn8) == 134_489_759
    assert count_parameters(fcn32) == 136_152_917
    assert not fcn8.upscore8.weight.requires_grad and not fcn32.upscore.weight.requires_grad
    assert fcn8.upscore2.weight.requires_grad and fcn8.upscore_pool4.weight.requires_grad


def _marker_fcn(cls):
    """An FCN whose every score path carries input channel 0 unchanged to one class.

    Each 3×3 conv passes channel 0 through (centre tap 1), fc6 takes its
    centre tap, the score layers read channel 0 (fc7 -> class 2, pool4 ->
    class 1, pool3 -> class 0) and the upsamplings are bilinear.
    """
    with torch.device("meta"):
        model = cls(3)
    model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name in fcn_module.VGG16_CONVS:
            getattr(model, name).weight[0, 0, 1, 1] = 1
        model.fc6.weight[0, 0, 3, 3] = 1
        model.fc7.weight[0, 0, 0, 0] = 1
        for layer in model.modules():
            if isinstance(layer, nn.ConvTranspose2d):
                layer.weight.copy_(get_upsampling_weight(3, 3, layer.kernel_size[0]))
        model.score_fr.weight[2, 0] = 1
        if isinstance(model, FCN8s):
            model.score_pool4.weight[1, 0] = 1
            model.score_pool3.weight[0, 0] = 1
    return model


def _centroid(score_map):
    """(row, column) centre of mass of a non-negative H×W map."""
    rows, cols = torch.meshgrid(torch.arange(score_map.shape[0]), torch.arange(score_map.shape[1]), indexing="ij")
    total = score_map.sum()
    return ((score_map * rows).sum() / total).item(), ((score_map * cols).sum() / total).item()


@pytest.mark.parametrize("cls, classes", [(FCN8s, (0, 1, 2)), (FCN32s, (2,))])
def test_crops_put_each_score_back_where_it_came_from(cls, classes):
    """A 32×32 square on the pool5 grid comes out centred where it went in, through every path.

    conv1_1 (3×3, padding 100) shifts the grid by 99, so rows/columns 61..92
    (61 + 99 = 5·32) fill whole cells of pool3, pool4 and pool5. A crop
    offset off by one moves the centre by 1 (final crop) to 8 pixels.
    """
    x = torch.zeros(1, 3, 160, 160)
    x[0, 0, 61:93, 61:93] = 1
    with torch.inference_mode():
        out = _marker_fcn(cls)(x)
    assert out.shape == (1, 3, 160, 160)
    for c in classes:
        assert out[0, c].min() >= 0 and out[0, c].sum() > 0
        assert _centroid(out[0, c]) == pytest.approx((76.5, 76.5), abs=1e-4)


def test_new_fcn_predicts_zero_and_learns_its_scores():
    torch.manual_seed(0)
    model = FCN32s(2)
    torch.testing.assert_close(model.upscore.weight, get_upsampling_weight(2, 2, 64))
    for name in fcn_module.VGG16_CONVS + ("fc6", "fc7"):  # keep the backward pass short
        getattr(model, name).requires_grad_(False)
    out = model(torch.randn(1, 3, 20, 27))
    assert out.shape == (1, 2, 20, 27) and out.dtype == torch.float32
    assert not out.any()  # zero-initialised scores
    out.sum().backward()
    assert model.score_fr.weight.grad.abs().sum() > 0 and model.upscore.weight.grad is None


def test_bad_input_and_n_class_are_refused(meta_models):
    with pytest.raises(ValueError, match="unsqueeze"):
        meta_models["FCN8s"](torch.empty(3, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="N×3×H×W"):
        meta_models["FCN32s"](torch.empty(1, 1, 32, 32, device="meta"))
    with pytest.raises(ValueError, match="positive int"):
        FCN8s(0)


def test_copy_params_from_vgg16(vgg16):
    with torch.device("meta"):
        model = FCN32s(4)
    model.to_empty(device="cpu")
    for p in model.parameters():
        p.detach().zero_()
    assert copy_params_from_vgg16(model, vgg16) is model
    vgg_convs = [m for m in vgg16.features if isinstance(m, nn.Conv2d)]
    for name, source in zip(fcn_module.VGG16_CONVS, vgg_convs, strict=True):
        assert torch.equal(getattr(model, name).weight, source.weight)
        assert torch.equal(getattr(model, name).bias, source.bias)
    assert torch.equal(model.fc6.weight, vgg16.classifier[0].weight.view(4096, 512, 7, 7))
    assert torch.equal(model.fc6.bias, vgg16.classifier[0].bias)
    assert torch.equal(model.fc7.weight.flatten(1), vgg16.classifier[3].weight)
    assert torch.equal(model.fc7.bias, vgg16.classifier[3].bias)
    assert model.fc6.weight.data_ptr() != vgg16.classifier[0].weight.data_ptr()  # copied, not shared
    assert not model.score_fr.weight.any()


def test_copy_params_refuses_other_networks():
    with torch.device("meta"):
        model, vgg_bn = FCN8s(2), models.vgg16_bn()
    with pytest.raises(ValueError, match="without batch norm"):
        model.copy_params_from_vgg16(vgg_bn)
    with pytest.raises(ValueError, match="VGG16"):
        copy_params_from_vgg16(model, nn.Linear(2, 2))


def test_from_vgg16_copies_the_loaded_backbone(vgg16, monkeypatch):
    requests = []

    def fake_load_backbone(name, pretrained=True, allow_random=False):
        requests.append((name, pretrained, allow_random))
        return vgg16

    monkeypatch.setattr(fcn_module, "load_backbone", fake_load_backbone)
    model = FCN8s.from_vgg16(n_class=5, allow_random=True)
    assert isinstance(model, FCN8s) and model.n_class == 5
    assert requests == [("vgg16", True, True)]
    assert torch.equal(model.fc7.weight.flatten(1), vgg16.classifier[3].weight)
    assert torch.equal(model.conv5_3.weight, vgg16.features[28].weight)
