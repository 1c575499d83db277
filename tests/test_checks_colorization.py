"""Checks of notebook 05 pass on the reference and fail, with a helpful message, on stubs and typical mistakes."""
import pytest
import torch
from torch import nn

from coursekit.checks import colorization as checks
from coursekit.checks.report import CheckFailed
from coursekit.models import colorization as ref

# ---------- check_pool_upsample_counts ----------


def good_counts(nic, nf, nc, h, w):
    a = lambda n: 3 * n - 2  # noqa: E731
    hw = h * w
    return {"weights": 36 * nf ** 2 + 9 * nc ** 2 + 9 * nic * nf + 9 * nf * nc + 12 * nf + 4 * nc,
            "outputs": nf * hw + nf * hw // 4 * 2 + 2 * nf * hw // 4 + 2 * nf * hw // 16 * 2 + nf * hw // 16
            + nf * hw // 4 * 2 + nc * hw // 4 + nc * hw * 3,
            "connections": nic * nf * a(h) * a(w) + nf * hw + nf * hw // 4 + 2 * nf * nf * a(h // 2) * a(w // 2)
            + 2 * nf * hw // 4 + 2 * nf * hw // 16 + 2 * nf * nf * a(h // 4) * a(w // 4) + nf * hw // 2
            + nf * nc * a(h // 2) * a(w // 2) + 2 * nc * hw + nc * nc * a(h) * a(w)}


def stub_counts(*args):
    raise NotImplementedError


def no_bias_counts(nic, nf, nc, h, w):
    return {**good_counts(nic, nf, nc, h, w), "weights": good_counts(nic, nf, nc, h, w)["weights"] - 3 * nf - 2 * nc}


def padded_counts(nic, nf, nc, h, w):
    """Every convolution output reads 9·C_in values (zero padding counted)."""
    hw = h * w
    convs = 9 * (nic * nf * hw + nf * 2 * nf * hw // 4 + 2 * nf * nf * hw // 16 + nf * nc * hw // 4 + nc * nc * hw)
    rest = nf * hw + nf * hw // 4 + 2 * nf * hw // 4 + 2 * nf * hw // 16 + nf * hw // 2 + 2 * nc * hw
    return {**good_counts(nic, nf, nc, h, w), "connections": convs + rest}


def handin_bn_counts(nic, nf, nc, h, w):
    """The hand-in's batch-norm rows: (H·W)² with no channel factor."""
    hw = h * w
    good = good_counts(nic, nf, nc, h, w)
    bn_ours = nf * hw // 4 + 2 * nf * hw // 16 + nf * hw // 4 + nc * hw
    bn_handin = (hw // 4) ** 2 + (hw // 16) ** 2 + (hw // 4) ** 2 + hw ** 2
    return {**good, "connections": good["connections"] - bn_ours + bn_handin}


def test_check_pool_upsample_counts_passes_on_the_closed_forms(capsys):
    checks.check_pool_upsample_counts(good_counts)
    assert "check passed: pool_upsample_counts" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (stub_counts, "not implemented"),
    (lambda *a: 3, "must return a dict"),
    (no_bias_counts, "add the biases"),
    (padded_counts, "padding is not an input"),
    (handin_bn_counts, "not \\(H·W\\)²"),
    (lambda *a: {**good_counts(*a), "outputs": 1}, "number of outputs"),
])
def test_check_pool_upsample_counts_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_pool_upsample_counts(bad)


# ---------- check_transpose_padding ----------

def test_check_transpose_padding_passes_on_the_reference(capsys):
    checks.check_transpose_padding(ref.transpose_padding)
    assert "check passed: transpose_padding" in capsys.readouterr().out


def stub_padding(kernel):
    raise NotImplementedError()


@pytest.mark.parametrize("bad, message", [
    (stub_padding, "not implemented"),
    (lambda k: (k // 2, 1), "kernel 4 and padding 2 on 32×32"),  # the handout's kernel // 2
    (lambda k: k // 2, "two ints"),
    (lambda k: (0, 1), "stride-2 convolution with kernel 3 and padding 0"),
    (lambda k: ((k - 1) // 2, 2), "output padding must be 0 or 1|output_padding must be 0 or 1"),
])
def test_check_transpose_padding_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_transpose_padding(bad)


# ---------- check_conv_transpose_net ----------

class StubNet(nn.Module):
    def __init__(self, kernel, num_filters, num_colours, num_in_channels):
        super().__init__()

    def forward(self, x):
        raise NotImplementedError


class HandoutPaddingNet(ref.ConvTransposeNet):
    """The handout's padding kernel // 2 and output_padding 1: wrong size for kernel 4."""

    def __init__(self, kernel, nf, nc, nic):
        super().__init__(kernel, nf, nc, nic)
        p = kernel // 2
        self.layer1[0] = nn.Conv2d(nic, nf, kernel, stride=2, padding=p)
        self.layer2[0] = nn.Conv2d(nf, 2 * nf, kernel, stride=2, padding=p)
        self.layer3[0] = nn.ConvTranspose2d(2 * nf, nf, kernel, stride=2, padding=p, output_padding=1)
        self.layer4[0] = nn.ConvTranspose2d(nf, nc, kernel, stride=2, padding=p, output_padding=1)
        self.layer5 = nn.Conv2d(nc, nc, kernel, padding=p)


class PoolingNet(ref.PoolUpsampleNet):
    pass


class ReluLastNet(ref.ConvTransposeNet):
    def forward(self, x):
        return torch.relu(super().forward(x))


class StudentStyleNet(nn.Module):
    """A correct solution written with nn.Conv2d(padding='same') (PyTorch warns for even kernels)."""

    def __init__(self, kernel, nf, nc, nic):
        super().__init__()
        p, op = ref.transpose_padding(kernel)
        self.layer1 = nn.Sequential(nn.Conv2d(nic, nf, kernel, stride=2, padding=p), nn.BatchNorm2d(nf), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(nf, 2 * nf, kernel, stride=2, padding=p), nn.BatchNorm2d(2 * nf),
                                    nn.ReLU())
        self.layer3 = nn.Sequential(nn.ConvTranspose2d(2 * nf, nf, kernel, 2, p, op), nn.BatchNorm2d(nf), nn.ReLU())
        self.layer4 = nn.Sequential(nn.ConvTranspose2d(nf, nc, kernel, 2, p, op), nn.BatchNorm2d(nc), nn.ReLU())
        self.layer5 = nn.Conv2d(nc, nc, kernel, padding="same")

    def forward(self, x):
        return self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


def test_check_conv_transpose_net_passes_on_the_reference_and_a_student_style_solution(capsys):
    checks.check_conv_transpose_net(ref.ConvTransposeNet)
    checks.check_conv_transpose_net(StudentStyleNet)
    captured = capsys.readouterr()
    assert captured.out.count("check passed: ConvTransposeNet") == 2
    assert "Warning" not in captured.err


@pytest.mark.parametrize("bad, message", [
    (StubNet, "not implemented"),
    (HandoutPaddingNet, "with kernel 4 the size changes"),
    (PoolingNet, "must not pool or upsample"),
    (ReluLastNet, "computation differs"),
    (ref.UNet, "parameter shapes"),
    (lambda *a: "no module", "nn.Module"),
])
def test_check_conv_transpose_net_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_conv_transpose_net(bad)


# ---------- check_unet ----------

class NoSkipUNet(ref.ConvTransposeNet):
    """UNet without any skip (layers sized for no skip)."""


class MissingCatUNet(ref.UNet):
    """Layers sized for the skips, but layer4 reads out3 alone."""

    def forward(self, x):
        out1 = self.layer1(x)
        out3 = self.layer3(self.layer2(out1))
        out4 = self.layer4(out3)
        return self.layer5(torch.cat((out4, x), dim=1))


class WrongAxisUNet(ref.UNet):
    """The skips concatenated along the height (dim=2), layers sized as if it worked."""

    def __init__(self, kernel, nf, nc, nic):
        super().__init__(kernel, nf, nc, nic)
        p, op = ref.transpose_padding(kernel)
        self.layer4[0] = nn.ConvTranspose2d(nf, nc, kernel, 2, p, op)
        self.layer5 = ref.SameConv2d(nc, nc, kernel)

    def forward(self, x):
        out1 = self.layer1(x)
        out3 = self.layer3(self.layer2(out1))
        out4 = self.layer4(torch.cat((out3, out1), dim=2))
        return self.layer5(out4)


class BatchAxisUNet(ref.UNet):
    def forward(self, x):
        out1 = self.layer1(x)
        out3 = self.layer3(self.layer2(out1))
        out4 = self.layer4(torch.cat((out3, out1), dim=0))
        return self.layer5(torch.cat((out4, x), dim=0))


class SwappedUNet(ref.UNet):
    def forward(self, x):
        out1 = self.layer1(x)
        out3 = self.layer3(self.layer2(out1))
        out4 = self.layer4(torch.cat((out1, out3), dim=1))
        return self.layer5(torch.cat((out4, x), dim=1))


def test_check_unet_passes_on_the_reference(capsys):
    checks.check_unet(ref.UNet)
    assert "check passed: UNet" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    (StubNet, "not implemented"),
    (NoSkipUNet, "called torch.cat 0 time"),
    (MissingCatUNet, "called torch.cat 0 time"),
    (WrongAxisUNet, "concatenated along dim=2"),
    (BatchAxisUNet, "concatenated along dim=0"),
    (SwappedUNet, "computation differs"),
    (HandoutPaddingNet, "parameter shapes|size changes"),
])
def test_check_unet_fails_on_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_unet(bad)


def test_checks_leave_torch_cat_alone():
    with pytest.raises(CheckFailed):
        checks.check_unet(WrongAxisUNet)
    assert torch.cat is torch._C._VariableFunctions.cat or torch.cat.__module__ != checks.__name__
    assert not isinstance(torch.cat, checks._CatRecorder)
