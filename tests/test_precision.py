"""coursekit.precision and the engine's precision and channels_last options."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from coursekit import engine
from coursekit import precision as amp


class SmallConvNet(nn.Module):
    """3×8×8 images -> 3 classes, with batch norm, so both memory formats and autocast have work to do."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def defaults(monkeypatch):
    """The engine's own defaults (conftest pins float32), in the ``cpu`` profile."""
    monkeypatch.delenv("COURSEKIT_PRECISION", raising=False)
    monkeypatch.delenv("COURSEKIT_CHANNELS_LAST", raising=False)
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    return monkeypatch


def _loader(n: int = 48, batch_size: int = 16, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 8, 8, generator=generator)
    labels = (images[:, 0].mean(dim=(1, 2)) > 0).long() + (images[:, 1].mean(dim=(1, 2)) > 0).long()
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _trained(epochs: int = 3, **options) -> tuple[nn.Module, engine.History]:
    torch.manual_seed(0)
    model = SmallConvNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    history = engine.fit(model, _loader(), optimizer, nn.CrossEntropyLoss(), epochs=epochs, val_loader=_loader(seed=1),
                         device="cpu", verbose=False, **options)
    return model, history


def test_auto_is_float32_in_the_ci_profile_whatever_the_cpu(defaults):
    defaults.setenv("COURSEKIT_PROFILE", "ci")
    defaults.setattr(amp, "native_bf16", lambda device: True)
    assert amp.resolve_precision("auto", "cpu") == "32"
    assert amp.resolve_channels_last(None, SmallConvNet(), "cpu") is False


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(defaults):
    defaults.setattr(amp, "native_bf16", lambda device: True)
    assert amp.resolve_precision("auto", "cpu") == "bf16"
    defaults.setattr(amp, "native_bf16", lambda device: False)
    assert amp.resolve_precision("auto", "cpu") == "32"
    assert amp.resolve_precision("auto", "mps") == "32"


def test_auto_is_float16_with_a_scaler_on_cuda(defaults):
    assert amp.resolve_precision("auto", "cuda") == "16-mixed"
    assert amp.resolve_precision("bf16", "cuda") == "bf16"


def test_the_environment_overrides_the_defaults(defaults):
    defaults.setattr(amp, "native_bf16", lambda device: True)
    defaults.setenv("COURSEKIT_PRECISION", "32")
    assert amp.resolve_precision("auto", "cpu") == "32"
    assert amp.resolve_precision("bf16", "cpu") == "bf16"  # an explicit argument wins over the variable
    defaults.setenv("COURSEKIT_CHANNELS_LAST", "0")
    assert amp.resolve_channels_last(None, SmallConvNet(), "cpu") is False
    defaults.setenv("COURSEKIT_CHANNELS_LAST", "1")
    assert amp.resolve_channels_last(None, SmallConvNet(), "cpu") is True


@pytest.mark.parametrize("name, value, resolve", [
    ("COURSEKIT_PRECISION", "fp8", lambda: amp.resolve_precision("auto", "cpu")),
    ("COURSEKIT_CHANNELS_LAST", "maybe", lambda: amp.resolve_channels_last(None, SmallConvNet(), "cpu"))])
def test_a_misspelt_environment_variable_is_an_error_that_names_it(defaults, name, value, resolve):
    defaults.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        resolve()


def test_unknown_precisions_and_float16_off_cuda_are_refused():
    with pytest.raises(ValueError, match="one of 32, bf16, 16-mixed"):
        amp.resolve_precision("64", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        amp.resolve_precision("16-mixed", "cpu")


def test_native_bf16_needs_the_cpu_flag_and_avx512_kernels(monkeypatch):
    monkeypatch.setattr(amp, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert not amp.native_bf16("cpu")
    monkeypatch.setattr(amp, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert not amp.native_bf16("cpu")
    assert not amp.native_bf16("mps")


def test_channels_last_by_default_only_for_convolutional_networks(defaults):
    assert amp.resolve_channels_last(None, SmallConvNet(), "cpu") is True
    assert amp.resolve_channels_last(None, nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "cpu") is False
    assert amp.resolve_channels_last(None, SmallConvNet(), "mps") is False
    assert amp.resolve_channels_last(False, SmallConvNet(), "cpu") is False
    assert amp.has_convolutions(nn.ConvTranspose2d(2, 2, 2))


def test_autocast_and_scaler_follow_the_precision():
    a = torch.randn(4, 4)
    with amp.autocast("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    with amp.autocast("32", "cpu"):
        assert (a @ a).dtype == torch.float32
    assert amp.grad_scaler("32", "cpu") is None and amp.grad_scaler("bf16", "cpu") is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available. Disabling" on a machine without a GPU
        assert isinstance(amp.grad_scaler("16-mixed", "cuda"), torch.amp.GradScaler)


def test_images_in_channels_last_keeps_shape_and_values():
    images = torch.randn(2, 3, 5, 7)
    moved = amp.images_in(images, True)
    assert moved.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous(
        memory_format=torch.channels_last)
    assert moved.shape == images.shape and torch.equal(moved, images)
    assert amp.images_in(images, False) is images
    targets = torch.zeros(2, 5, 7)
    assert amp.images_in(targets, True) is targets  # not an image batch


def test_memory_format_converts_the_weights_in_place_and_back():
    model = SmallConvNet()
    weight = model.features[0].weight
    with amp.memory_format(model, True):
        assert model.features[0].weight is weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert weight.is_contiguous()
    weight.view(-1)  # notebook code may view the weights again


def test_fit_in_bf16_learns_and_records_what_it_computed_in():
    model, history = _trained(epochs=6, precision="bf16", channels_last=True)
    assert history.precision == "bf16" and history.channels_last
    assert history.train_loss[-1] < history.train_loss[0] * 0.8
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())


def test_fit_in_bf16_stays_close_to_float32():
    _, exact = _trained(precision="32", channels_last=False)
    _, mixed = _trained(precision="bf16", channels_last=False)
    assert exact.precision == "32" and not exact.channels_last
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 0.002 per product); three short epochs stay within 2 %.
    assert mixed.train_loss == pytest.approx(exact.train_loss, rel=0.02)
    assert mixed.val_loss == pytest.approx(exact.val_loss, rel=0.02)


def test_channels_last_changes_the_layout_not_the_maths():
    _, usual = _trained(precision="32", channels_last=False)
    _, last = _trained(precision="32", channels_last=True)
    assert last.train_loss == pytest.approx(usual.train_loss, rel=1e-5)
    assert last.val_accuracy == pytest.approx(usual.val_accuracy, abs=1 / 48)


def test_the_loss_function_gets_float32_logits_under_autocast():
    seen = []

    def loss_fn(logits, targets):
        seen.append(logits.dtype)
        return nn.functional.cross_entropy(logits, targets)

    model = SmallConvNet()
    engine.fit(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, val_loader=_loader(),
               device="cpu", verbose=False, precision="bf16")
    assert seen and set(seen) == {torch.float32}


def test_evaluate_in_bf16_matches_float32_predictions_closely():
    model, _ = _trained(precision="32", channels_last=False)
    exact = engine.evaluate(model, _loader(seed=1), 3, device="cpu", precision="32", channels_last=False)
    mixed = engine.evaluate(model, _loader(seed=1), 3, device="cpu", precision="bf16", channels_last=True)
    assert mixed["loss"] == pytest.approx(exact["loss"], rel=0.02)
    assert abs(mixed["accuracy"] - exact["accuracy"]) <= 2 / 48
    assert model.features[0].weight.is_contiguous()


def test_fit_announces_a_precision_other_than_float32(capsys):
    model = SmallConvNet()
    engine.fit(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu",
               precision="bf16", channels_last=True)
    assert "computing in precision bf16, channels_last" in capsys.readouterr().out
    engine.fit(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), device="cpu")
    assert "computing in" not in capsys.readouterr().out


def test_fit_refuses_float16_on_a_cpu():
    model = SmallConvNet()
    with pytest.raises(ValueError, match="16-mixed"):
        engine.fit(model, _loader(), torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                   device="cpu", precision="16-mixed")


def test_train_step_scales_the_loss_through_a_grad_scaler():
    class RecordingScaler:
        def __init__(self):
            self.calls = []

        def scale(self, loss):
            self.calls.append("scale")
            return loss * 8.0

        def step(self, optimizer):
            self.calls.append("step")
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad /= 8.0
            optimizer.step()

        def update(self):
            self.calls.append("update")

    torch.manual_seed(0)
    scaled, plain = SmallConvNet(), SmallConvNet()
    plain.load_state_dict(scaled.state_dict())
    images, labels = next(iter(_loader()))
    scaler = RecordingScaler()
    engine.train_step(scaled, images, labels, torch.optim.SGD(scaled.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                      scaler=scaler)
    engine.train_step(plain, images, labels, torch.optim.SGD(plain.parameters(), lr=0.1), nn.CrossEntropyLoss())
    assert scaler.calls == ["scale", "step", "update"]
    for a, b in zip(scaled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_evaluate_alone_computes_in_float32_whatever_the_defaults(defaults):
    defaults.setattr(amp, "native_bf16", lambda device: True)
    model, history = _trained(epochs=1)
    assert history.precision == "bf16" and history.channels_last  # fit follows the cpu profile's defaults
    plain = engine.evaluate(model, _loader(seed=1), 3, device="cpu")
    exact = engine.evaluate(model, _loader(seed=1), 3, device="cpu", precision="32", channels_last=False)
    assert plain["loss"] == exact["loss"] and (plain["confusion"] == exact["confusion"]).all()
