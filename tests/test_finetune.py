"""DeepLabv3 prepared for fine-tuning: frozen layers, the new head, frozen batch norm in eval mode, weights, baselines.

No network: pretrained weights are either absent (offline hub) or a random state dict saved where the cache expects
the COCO file.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import segmentation

from coursekit import engine
from coursekit.losses import cross_entropy, soft_iou_loss
from coursekit.models import finetune, pretrained
from coursekit.models.pretrained import PretrainedWeightsUnavailable, cached_weights_path

MOBILENET = segmentation.DeepLabV3_MobileNet_V3_Large_Weights.DEFAULT
HEAD = ["classifier.4.weight", "classifier.4.bias"]


def batch_norm_buffers(model):
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


def tiny_batch(n=4, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=generator)
    targets = (torch.rand(n, size, size, generator=generator) < 0.4).long()
    targets[:, :2] = 255
    return images, targets


@pytest.fixture(scope="module")
def random_model():
    """A fine-tuning model (MobileNetV3 backbone, random weights, statistics of a random batch), built once."""
    torch.manual_seed(0)
    model = finetune.deeplabv3_finetune(2, pretrained_weights=False)
    finetune.set_batch_norm_statistics(model, tiny_batch(8, seed=1)[0])
    return model


@pytest.mark.parametrize("backbone", sorted(finetune.BACKBONES))
def test_every_backbone_gets_a_new_256_to_k_head_and_only_it_trains(backbone):
    model, loaded = finetune.load_deeplabv3(backbone, pretrained_weights=False)
    assert not loaded and model.aux_classifier is not None
    assert isinstance(model.classifier[4], nn.Conv2d) and model.classifier[4].in_channels == 256
    tuned = finetune.prepare_for_finetuning(model, num_classes=3)
    head = tuned.classifier[4]
    assert isinstance(tuned, finetune.FineTuneDeepLabV3) and tuned.aux_classifier is None and not tuned.pretrained
    assert (head.in_channels, head.out_channels, head.kernel_size) == (256, 3, (1, 1)) and head.bias is not None
    assert [name for name, p in tuned.named_parameters() if p.requires_grad] == HEAD
    assert finetune.trainable_parameters(tuned) == [head.weight, head.bias]
    assert finetune.count_parameters(tuned) == (256 * 3 + 3, sum(p.numel() for p in tuned.parameters()))
    assert tuned.backbone is model.backbone, "the loaded layers are reused, not copied"


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="mobilenet_v3_large, resnet50, resnet101"):
        finetune.load_deeplabv3("vgg16")


def test_every_backbone_is_registered_with_its_coco_weights():
    for name in finetune.BACKBONES.values():
        spec = pretrained.MODELS[name]
        assert spec.task == "segmentation" and "COCO" in str(spec.weights)
    assert pretrained.weights_for("deeplabv3_mobilenet_v3_large") == MOBILENET


def test_ci_profile_continues_from_random_weights_with_a_note(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    model = finetune.deeplabv3_finetune(2)
    out = capsys.readouterr().out
    assert out.startswith("NOTE: pretrained DeepLabV3-MobileNetV3-Large weights are not available offline")
    assert cached_weights_path(MOBILENET).name in out
    assert not model.pretrained and offline_hub.calls == []


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_missing_weights_outside_ci_are_a_clear_error(offline_hub, monkeypatch, profile):
    monkeypatch.setenv("COURSEKIT_PROFILE", profile)
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        finetune.deeplabv3_finetune(2, backbone="mobilenet_v3_large")
    assert MOBILENET.url in str(info.value) and str(cached_weights_path(MOBILENET)) in str(info.value)


def test_allow_random_continues_outside_ci(offline_hub, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    model = finetune.deeplabv3_finetune(2, allow_random=True)
    assert not model.pretrained and "NOTE" in capsys.readouterr().out


def test_cached_weights_are_loaded_into_the_frozen_layers(offline_hub, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    torch.manual_seed(3)
    state = segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21,
                                                      aux_loss=True).state_dict()
    offline_hub.checkpoints.mkdir(parents=True)
    torch.save(state, cached_weights_path(MOBILENET))
    model = finetune.deeplabv3_finetune(2)
    assert model.pretrained and offline_hub.calls == []
    mine = model.state_dict()
    for name in ("backbone.0.0.weight", "backbone.16.1.running_var", "classifier.0.convs.0.0.weight"):
        assert torch.equal(mine[name], state[name])
    assert mine["classifier.4.weight"].shape == (2, 256, 1, 1)
    assert not any(name.startswith("aux_classifier") for name in mine)


def test_freeze_and_replace_head_on_their_own():
    model, _ = finetune.load_deeplabv3(pretrained_weights=False)
    assert finetune.freeze(model) is model and not finetune.trainable_parameters(model)
    head = finetune.replace_head(model, 5)
    assert model.classifier[4] is head and head.weight.requires_grad and head.out_channels == 5
    model.classifier[4] = nn.Identity()
    with pytest.raises(TypeError, match="classifier\\[4\\]"):
        finetune.replace_head(model, 2)


def test_frozen_batch_norm_goes_to_eval_and_trainable_batch_norm_stays_in_train_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4))
    net[1].requires_grad_(False)
    net.train()
    assert finetune.frozen_batch_norm_to_eval(net) == ["1"]
    assert not net[1].training and net[2].training and net[0].training


def test_train_keeps_frozen_batch_norm_in_eval_mode(random_model):
    layers = [layer for layer in random_model.modules() if isinstance(layer, nn.BatchNorm2d)]
    assert random_model.train() is random_model and random_model.training
    assert layers and not any(layer.training for layer in layers)
    assert random_model.classifier[0].project[3].training, "dropout still trains"
    random_model.eval()
    assert not random_model.training and not random_model.classifier[0].project[3].training
    random_model.train()


def test_one_training_step_changes_only_the_new_layer_and_no_batch_norm_buffer(random_model):
    images, targets = tiny_batch()
    before = {name: value.clone() for name, value in random_model.state_dict().items()}
    changes = finetune.one_step_changes(random_model, images, targets, cross_entropy)
    assert changes.trainable == HEAD and changes.parameters == HEAD and changes.buffers == []
    assert all(torch.equal(value, before[name]) for name, value in random_model.state_dict().items()), \
        "one_step_changes works on a copy"


def test_one_step_changes_sees_batch_norm_that_trains():
    torch.manual_seed(0)
    model, _ = finetune.load_deeplabv3(pretrained_weights=False)
    finetune.freeze(model)
    finetune.replace_head(model, 2)  # a plain DeepLabV3: train() puts batch norm in train mode
    changes = finetune.one_step_changes(model, *tiny_batch(), cross_entropy)
    assert "backbone.0.1.running_mean" in changes.buffers and "backbone.0.1.num_batches_tracked" in changes.buffers
    assert "classifier.4.bias" in changes.parameters and len(changes.parameters) <= 2


def test_set_batch_norm_statistics_uses_the_batch_and_restores_the_mode():
    torch.manual_seed(0)
    model = finetune.deeplabv3_finetune(2, pretrained_weights=False).eval()
    images = tiny_batch(8)[0]
    momenta = [layer.momentum for layer in model.modules() if isinstance(layer, nn.BatchNorm2d)]
    names = finetune.set_batch_norm_statistics(model, images)
    assert "backbone.0.1" in names and not model.training
    stem = model.backbone["0"]
    with torch.no_grad():
        features = stem[0](images)
    assert torch.allclose(stem[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert [layer.momentum for layer in model.modules() if isinstance(layer, nn.BatchNorm2d)] == momenta
    logits = model(images)["out"]
    assert logits.shape == (8, 2, 32, 32) and logits.dtype == torch.float32


@pytest.mark.parametrize("loss_fn", [cross_entropy, soft_iou_loss])
def test_engine_fit_trains_the_head_through_the_output_dict(random_model, loss_fn):
    model = finetune.prepare_for_finetuning(finetune.load_deeplabv3(pretrained_weights=False)[0], 2)
    model.load_state_dict(random_model.state_dict())
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images, targets = tiny_batch(8)
    loader = DataLoader(TensorDataset(images, targets), batch_size=4)
    optimizer = torch.optim.Adam(finetune.trainable_parameters(model), lr=1e-2)
    history = engine.fit(model, loader, optimizer, loss_fn=loss_fn, epochs=2, val_loader=loader, num_classes=2,
                         monitor="miou", verbose=False, device="cpu")
    assert len(history.val_miou) == 2 and 0 <= history.best_score <= 1
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])]
    assert changed == HEAD


def test_constant_miou_and_baselines_are_half_the_class_shares():
    targets = torch.tensor([[[0, 0, 0, 1], [1, 255, 0, 0]]])  # 5 background, 2 flower, 1 ignored
    loader = DataLoader(TensorDataset(torch.zeros(1, 3, 2, 4), targets), batch_size=1)
    assert finetune.constant_miou(loader, 0) == pytest.approx(5 / 7 / 2)
    assert finetune.constant_miou(loader, 1) == pytest.approx(2 / 7 / 2)
    assert finetune.baselines(loader) == pytest.approx({"all background": 5 / 14, "all flower": 2 / 14})
    assert finetune.CLASSES == ("background", "flower")
