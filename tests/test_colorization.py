"""coursekit.models.colorization and the weight / output / connection counts of coursekit.models.summary."""
import warnings

import pytest
import torch
from torch import nn

from coursekit.models.colorization import ConvTransposeNet, PoolUpsampleNet, SameConv2d, UNet, transpose_padding
from coursekit.models.summary import layer_counts

NETWORKS = (PoolUpsampleNet, ConvTransposeNet, UNet)


@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: n.__name__)
@pytest.mark.parametrize("kernel", (3, 4, 5))
@pytest.mark.parametrize("size", ((32, 32), (64, 48), (16, 8)))
def test_output_keeps_height_and_width(network, kernel, size):
    model = network(kernel, 8, 10, 2).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 2, *size))
    assert out.shape == (3, 10, *size) and out.dtype == torch.float32


def test_transpose_padding_values_and_errors():
    assert [transpose_padding(k) for k in (3, 4, 5)] == [(1, 1), (1, 0), (2, 1)]
    for kernel in range(2, 9):
        padding, output_padding = transpose_padding(kernel)
        up = nn.ConvTranspose2d(1, 1, kernel, 2, padding, output_padding)
        down = nn.Conv2d(1, 1, kernel, 2, padding)
        assert up(torch.zeros(1, 1, 7, 5)).shape[-2:] == (14, 10)
        assert down(torch.zeros(1, 1, 14, 10)).shape[-2:] == (7, 5)
    for bad in (1, 0, 3.0, True):
        with pytest.raises(ValueError, match="kernel"):
            transpose_padding(bad)


@pytest.mark.parametrize("kernel", (3, 4, 5))
def test_same_conv_matches_pytorchs_same_padding(kernel):
    ours = SameConv2d(3, 4, kernel)
    theirs = nn.Conv2d(3, 4, kernel, padding="same")
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 9, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(ours(x), theirs(x))


def _layer_types(stage):
    return [type(m).__name__ for m in stage]


def test_pool_upsample_net_layer_order():
    model = PoolUpsampleNet(3, 8, 10, 1)
    assert _layer_types(model.layer1) == ["SameConv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    assert _layer_types(model.layer3) == ["SameConv2d", "Upsample", "BatchNorm2d", "ReLU"]
    channels = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert channels == [(1, 8), (8, 16), (16, 8), (8, 10), (10, 10)]


def test_conv_transpose_net_resamples_with_strided_and_transposed_convolutions():
    model = ConvTransposeNet(4, 8, 10, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.Upsample)) for m in model.modules())
    assert _layer_types(model.layer1) == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert model.layer1[0].stride == (2, 2) and model.layer2[0].stride == (2, 2)
    assert isinstance(model.layer3[0], nn.ConvTranspose2d) and isinstance(model.layer4[0], nn.ConvTranspose2d)
    assert model.layer3[0].padding == (1, 1) and model.layer3[0].output_padding == (0, 0)


def test_unet_skips_join_the_channels():
    model = UNet(3, 8, 10, 3)
    assert model.layer4[0].in_channels == 16 and model.layer5.in_channels == 13
    seen = {}
    model.layer4.register_forward_pre_hook(lambda m, i: seen.update(layer4=i[0].shape))
    model.layer5.register_forward_pre_hook(lambda m, i: seen.update(layer5=i[0].shape))
    x = torch.rand(2, 3, 32, 32)
    model.eval()(x)
    assert seen == {"layer4": (2, 16, 16, 16), "layer5": (2, 13, 32, 32)}
    # the last convolution really reads the input: changing x changes the output through layer5 alone
    with torch.no_grad():
        model.layer5.weight[:, 10:] = 0
        without = model(x)
        model.layer5.weight[:, 10:] = 1
        assert not torch.allclose(without, model(x))


def test_models_refuse_wrong_inputs():
    with pytest.raises(ValueError, match="multiples of 4"):
        UNet()(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="N×1×H×W"):
        PoolUpsampleNet()(torch.rand(1, 3, 32, 32))


def _pool_upsample_closed_forms(nic, nf, nc, h, w):
    """The handout's weights and outputs; connections in layer_counts' convention (derived in notebook 05)."""
    a = lambda n: 3 * n - 2  # noqa: E731  stride-1 3×3 convolution, padding 1: taps per axis
    connections = (nic * nf * a(h) * a(w) + nf * h * w + nf * h * w // 4
                   + 2 * nf * nf * a(h // 2) * a(w // 2) + 2 * nf * h * w // 4 + 2 * nf * h * w // 16
                   + 2 * nf * nf * a(h // 4) * a(w // 4) + nf * h * w // 4 + nf * h * w // 4
                   + nf * nc * a(h // 2) * a(w // 2) + nc * h * w + nc * h * w + nc * nc * a(h) * a(w))
    return {"weights": 36 * nf ** 2 + 9 * nc ** 2 + 9 * nic * nf + 9 * nf * nc + 12 * nf + 4 * nc,
            "outputs": {32: 2880 * nf + 3328 * nc, 64: 11520 * nf + 13312 * nc}.get(h) if h == w else None,
            "connections": connections}


@pytest.mark.parametrize("nic, nf, nc", [(1, 32, 24), (3, 8, 10), (2, 16, 5), (1, 1, 1)])
@pytest.mark.parametrize("size", (32, 64))
def test_layer_counts_match_the_closed_forms(nic, nf, nc, size):
    totals = layer_counts(PoolUpsampleNet(3, nf, nc, nic), (1, nic, size, size)).totals
    assert totals == _pool_upsample_closed_forms(nic, nf, nc, size, size)


def test_closed_form_connections_at_32_and_64():
    """The forms the notebook prints: 5200·NF² + 2432·NF + 8836·NIC·NF + 2116·NF·NC + 8836·NC² + 2048·NC at 32×32."""
    for nic, nf, nc in [(1, 32, 24), (2, 5, 7)]:
        c32 = layer_counts(PoolUpsampleNet(3, nf, nc, nic), (1, nic, 32, 32)).totals["connections"]
        c64 = layer_counts(PoolUpsampleNet(3, nf, nc, nic), (1, nic, 64, 64)).totals["connections"]
        assert c32 == 5200 * nf ** 2 + 2432 * nf + 8836 * nic * nf + 2116 * nf * nc + 8836 * nc ** 2 + 2048 * nc
        assert c64 == 21904 * nf ** 2 + 9728 * nf + 36100 * nic * nf + 8836 * nf * nc + 36100 * nc ** 2 + 8192 * nc


def test_layer_counts_rows_convention():
    table = layer_counts(PoolUpsampleNet(3, 4, 6, 1), (1, 1, 8, 8))
    rows = {row.name: row for row in table.rows}
    conv = rows["layer1.0"]
    assert (conv.weights, conv.outputs, conv.connections) == (9 * 4 + 4, 4 * 64, 4 * 22 * 22)  # (3·8-2)² taps
    assert rows["layer1.1"].connections == 4 * 64  # 2×2 pooling reads each input once
    assert rows["layer1.2"].weights == 8 and rows["layer1.2"].connections == rows["layer1.2"].outputs
    relu = rows["layer1.3"]
    assert not relu.counted and relu.kind == "ReLU"
    assert table.totals["outputs"] == sum(r.outputs for r in table.rows if r.counted)
    text = str(table)
    assert "ReLU (not counted)" in text and text.splitlines()[-1].startswith("total")
    assert f"{table.totals['connections']:,}" in text.splitlines()[-1]


def test_layer_counts_of_transposed_convolutions_exclude_cropped_outputs():
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    rows = layer_counts(nn.Sequential(layer), (1, 2, 4, 4)).rows
    # each input value reaches the 3×3 taps of the 8×8 output that survive the crop: per axis 3·4 - 1 = 11
    assert rows[0].connections == 2 * 3 * 11 * 11 and rows[0].weights == 2 * 3 * 9 + 3


def test_layer_counts_refuses_what_it_cannot_count():
    with pytest.raises(ValueError, match="N, C, H, W"):
        layer_counts(PoolUpsampleNet(), (1, 32, 32))
    with pytest.raises(ValueError, match="nearest"):
        layer_counts(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear")), (1, 1, 4, 4))


def test_layer_counts_leaves_the_model_alone():
    model = UNet(3, 4, 5, 1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_counts(model, (1, 1, 16, 16))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
