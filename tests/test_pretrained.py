"""Pretrained-weight loading: cache lookup, offline behaviour per profile, safe loading. No network."""
from __future__ import annotations

import socket

import pytest
import torch
from PIL import Image
from torchvision import models

from coursekit.models import pretrained
from coursekit.models.pretrained import (
    MODELS, PretrainedClassifier, PretrainedWeightsUnavailable, cached_weights_path, load_backbone, load_weights,
    pretrained_classifier, weights_available, weights_for)

RESNET18 = models.ResNet18_Weights.DEFAULT


@pytest.fixture
def resnet18_state(offline_hub):
    """A random ResNet-18 state dict saved where the hub cache expects the ImageNet file."""
    torch.manual_seed(1)
    state = models.resnet18(weights=None).state_dict()
    offline_hub.checkpoints.mkdir(parents=True)
    torch.save(state, offline_hub.checkpoints / "resnet18-f37072fd.pth")
    return state


def test_weights_for_names_the_enum_members():
    assert weights_for("vgg16") == models.VGG16_Weights.IMAGENET1K_V1
    assert weights_for("resnet18") == RESNET18
    assert set(MODELS) >= {"vgg16", "resnet18", "resnet34", "resnet50", "deeplabv3_resnet50"}
    with pytest.raises(ValueError, match="resnet18"):
        weights_for("alexnet")


def test_cached_weights_path_follows_torch_home(offline_hub):
    assert cached_weights_path(RESNET18) == offline_hub.checkpoints / "resnet18-f37072fd.pth"
    assert cached_weights_path(models.VGG16_Weights.IMAGENET1K_V1).name == "vgg16-397923af.pth"


def test_weights_available_looks_only_at_the_cache(offline_hub):
    assert not weights_available(RESNET18)
    assert not weights_available("resnet18")
    offline_hub.checkpoints.mkdir(parents=True)
    cached_weights_path(RESNET18).write_bytes(b"x")
    assert weights_available(RESNET18) and weights_available("resnet18")
    assert offline_hub.calls == []


def test_ci_profile_falls_back_without_trying_the_network(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    model = load_backbone("resnet18")
    assert isinstance(model, models.ResNet) and model.fc.out_features == 1000
    out = capsys.readouterr().out
    assert out.startswith("NOTE: pretrained ResNet-18 weights are not available offline")
    assert "resnet18-f37072fd.pth is not in the torch hub cache" in out and "random initialisation" in out
    assert offline_hub.calls == []


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_cpu_and_full_profiles_raise_a_clear_error(offline_hub, monkeypatch, profile):
    monkeypatch.setenv("COURSEKIT_PROFILE", profile)
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        load_weights(RESNET18)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert RESNET18.url in message and str(cached_weights_path(RESNET18)) in message
    assert "allow_random=True" in message and "no network in tests" in message
    assert len(offline_hub.calls) == 1


def test_download_is_bounded_by_a_socket_timeout(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    before = socket.getdefaulttimeout()
    with pytest.raises(PretrainedWeightsUnavailable):
        load_weights(RESNET18, timeout=3.5)
    url, dst, hash_prefix, timeout_during = offline_hub.calls[0]
    assert (url, dst, hash_prefix) == (RESNET18.url, str(cached_weights_path(RESNET18)), "f37072fd")
    assert timeout_during == 3.5
    assert socket.getdefaulttimeout() == before


def test_allow_random_continues_outside_ci(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "full")
    assert load_weights(RESNET18, allow_random=True) is None
    assert "NOTE: pretrained ResNet-18 weights are not available offline" in capsys.readouterr().out
    assert len(offline_hub.calls) == 1


def test_pretrained_false_reads_and_fetches_nothing(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    model = load_backbone("resnet18", pretrained=False)
    assert isinstance(model, models.ResNet)
    assert capsys.readouterr().out == "" and offline_hub.calls == []


@pytest.mark.parametrize("profile", ["ci", "cpu"])
def test_cached_file_is_loaded_without_the_network(resnet18_state, offline_hub, monkeypatch, capsys, profile):
    monkeypatch.setenv("COURSEKIT_PROFILE", profile)
    model = load_backbone("resnet18")
    loaded = model.state_dict()
    assert loaded.keys() == resnet18_state.keys()
    assert all(torch.equal(loaded[k], resnet18_state[k]) for k in loaded)
    assert offline_hub.calls == [] and capsys.readouterr().out == ""


def test_a_successful_download_lands_in_the_cache_and_loads(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    state = {"weight": torch.arange(6.0).reshape(2, 3)}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    loaded = load_weights(RESNET18)
    assert torch.equal(loaded["weight"], state["weight"])
    assert weights_available(RESNET18)


class _NotATensor:
    pass


def test_loading_refuses_pickled_objects(offline_hub, monkeypatch):
    """weights_only=True: a checkpoint holding arbitrary Python objects is not unpickled."""
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    offline_hub.checkpoints.mkdir(parents=True)
    torch.save({"payload": _NotATensor()}, cached_weights_path(RESNET18))
    with pytest.raises(RuntimeError, match="delete it"):
        load_weights(RESNET18)


def test_corrupt_cache_file_says_what_to_do(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    offline_hub.checkpoints.mkdir(parents=True)
    cached_weights_path(RESNET18).write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="could not be read"):
        load_weights(RESNET18)


def test_segmentation_model_builds_offline_without_fetching_its_backbone(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    model = load_backbone("deeplabv3_resnet50")
    assert model.aux_classifier is not None
    assert model.classifier[-1].out_channels == 21
    assert "DeepLabV3-ResNet-50" in capsys.readouterr().out
    assert offline_hub.calls == []


def test_pretrained_classifier_offline_is_flagged_random(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    clf = pretrained_classifier("resnet18")
    assert isinstance(clf, PretrainedClassifier) and clf.pretrained is False
    assert not clf.model.training
    assert len(clf.categories) == 1000 and clf.categories[0] == "tench"
    image = clf.transforms(Image.new("RGB", (300, 250), (120, 30, 200)))
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    with torch.inference_mode():
        assert clf.model(image.unsqueeze(0)).shape == (1, 1000)


def test_pretrained_classifier_with_cached_weights(resnet18_state, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    clf = pretrained_classifier("resnet18")
    assert clf.pretrained is True
    assert torch.equal(clf.model.fc.weight, resnet18_state["fc.weight"])


def test_pretrained_classifier_rejects_segmentation_models():
    with pytest.raises(ValueError, match="not an ImageNet classifier"):
        pretrained_classifier("deeplabv3_resnet50")


def test_title_of_unregistered_weights():
    assert pretrained._title(models.AlexNet_Weights.IMAGENET1K_V1) == "AlexNet"


def test_the_note_names_the_cache_folder_in_words(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setenv("HOME", str(offline_hub.checkpoints.parents[2]))
    load_weights(RESNET18)
    home_relative = cached_weights_path(RESNET18).parent.relative_to(offline_hub.checkpoints.parents[2])
    assert f"(resnet18-f37072fd.pth is not in the torch hub cache, ~/{home_relative.as_posix()}); continuing" \
        in capsys.readouterr().out


def test_a_classifier_without_weights_says_only_what_is_missing(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    classifier = pretrained_classifier("resnet18")
    out = capsys.readouterr().out
    assert not classifier.pretrained and out.startswith("NOTE: pretrained ResNet-18 weights are not available")
    assert "continuing" not in out and out.rstrip().endswith(").")
