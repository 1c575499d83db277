"""The notebook-04 checks pass on reference solutions and fail on the stub and on typical mistakes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checks import segmentation as checks
from coursekit.checks.report import CheckFailed
from coursekit.losses import cross_entropy
from coursekit.metrics import ConfusionMatrix, eval_semantic_segmentation
from coursekit.models.encoder_decoder import ResNetEncoderDecoder
from coursekit.models.fcn import FCN8s, FCN32s


def stub(*args):
    raise NotImplementedError


# ---------------------------------------------------------------- cross-entropy

def ce_no_ignore(logits, target):
    return F.nll_loss(F.log_softmax(logits, dim=1), target)  # 255 is out of range


def ce_void_as_background(logits, target):
    return F.cross_entropy(logits, target.clamp(max=logits.shape[1] - 1))


def ce_one_hot(logits, target):
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()  # fails on 255
    return -(one_hot * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def ce_mean_over_all_pixels(logits, target):
    return cross_entropy(logits, target, reduction="sum") / target.numel()


def ce_unstable(logits, target):
    probs = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    picked = torch.log(probs).gather(1, torch.where(target == 255, 0, target).unsqueeze(1)).squeeze(1)
    valid = target != 255
    return -(picked * valid).sum() / valid.sum()


def ce_item(logits, target):
    return cross_entropy(logits, target).item()


def ce_detached(logits, target):
    return cross_entropy(logits.detach(), target)


def test_cross_entropy_check_passes_on_the_reference(capsys):
    checks.check_cross_entropy(cross_entropy)
    checks.check_cross_entropy(nn.CrossEntropyLoss(ignore_index=255))
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("loss_fn, message", [
    (stub, "not implemented"),
    (ce_no_ignore, "raised"),
    (ce_void_as_background, "wrong values"),
    (ce_one_hot, "raised"),
    (ce_mean_over_all_pixels, "averages over every pixel"),
    (ce_unstable, "not finite"),
    (ce_item, "scalar tensor"),
    (ce_detached, "differentiable"),
])
def test_cross_entropy_check_catches(loss_fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_cross_entropy(loss_fn)


# ---------------------------------------------------------------- the metric call

def miou_reference(output, target):
    predictions = output.argmax(dim=1).detach().cpu().numpy()
    ground_truth = target.detach().cpu().numpy().copy()
    ground_truth[ground_truth == 255] = -1
    return eval_semantic_segmentation(predictions, ground_truth)["miou"]


def miou_logits(output, target):
    ground_truth = target.cpu().numpy().copy()
    ground_truth[ground_truth == 255] = -1
    return eval_semantic_segmentation(output.detach().cpu().numpy(), ground_truth)["miou"]


def miou_void_kept(output, target):
    return eval_semantic_segmentation(output.argmax(dim=1).cpu().numpy(), target.cpu().numpy())["miou"]


def miou_in_place(output, target):
    ground_truth = target.cpu().numpy()  # shares memory with a CPU tensor
    ground_truth[ground_truth == 255] = -1
    return eval_semantic_segmentation(output.argmax(dim=1).cpu().numpy(), ground_truth)["miou"]


def miou_per_image_mean(output, target):
    return float(np.mean([miou_reference(o[None], t[None]) for o, t in zip(output, target)]))


def miou_wrong_dim(output, target):
    return miou_reference(output.transpose(1, 3), target)


def test_miou_check_passes_on_the_reference(capsys):
    checks.check_miou(miou_reference)
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("miou_fn, message", [
    (stub, "not implemented"),
    (miou_logits, "raised"),
    (miou_void_kept, "void pixels as a class"),
    (miou_in_place, "changed the targets"),
    (miou_per_image_mean, "mIoU of the batch"),
    (miou_wrong_dim, "raised|mIoU of the batch"),
    (lambda output, target: "0.5", "return a number"),
])
def test_miou_check_catches(miou_fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_miou(miou_fn)


# ---------------------------------------------------------------- output shape

class Segmenter(nn.Module):
    """Downsamples by 4, then returns to the input size in one of several ways."""

    def __init__(self, num_classes=3, upsample="exact"):
        super().__init__()
        self.body = nn.Conv2d(3, num_classes, 3, stride=4, padding=1)
        self.upsample = upsample

    def forward(self, images):
        scores = self.body(images)
        if self.upsample == "exact":
            return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.upsample == "factor":
            return F.interpolate(scores, scale_factor=4, mode="bilinear", align_corners=False)
        if self.upsample == "channels_last":
            return F.interpolate(scores, size=images.shape[-2:]).permute(0, 2, 3, 1)
        if self.upsample == "labels":
            return F.interpolate(scores, size=images.shape[-2:]).argmax(dim=1, keepdim=True)
        if self.upsample == "none":
            return scores
        raise NotImplementedError


def test_output_shape_check_passes_on_an_exact_upsampler(capsys):
    model = Segmenter().train()
    checks.check_output_shape(model, 3)
    assert model.training, "the check must restore the model's mode"
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("upsample, classes, message", [
    ("stub", 3, "not implemented"),
    ("none", 3, "output for input"),
    ("factor", 3, "output for input"),
    ("channels_last", 3, "output for input"),
    ("exact", 4, "output for input"),  # the model scores 3 classes
    ("labels", 1, "float logits"),
])
def test_output_shape_check_catches(upsample, classes, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_output_shape(Segmenter(3, upsample), classes)


# ---------------------------------------------------------------- FCN forward passes

def crop(score, offset, like):
    return score[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]


def fcn8s_forward(pool4_offset=5, pool3_offset=9, final=31, pool4=True, pool3=True, pool4_at_eighth=False):
    """An FCN8s subclass whose forward has one of the typical mistakes."""
    class Student(FCN8s):
        def forward(self, x):
            p3, p4, fc7 = self.trunk(x)
            h = self.upscore2(self.score_fr(fc7))
            if pool4 and not pool4_at_eighth:
                h = h + crop(self.score_pool4(p4), pool4_offset, h)
            h = self.upscore_pool4(h)
            if pool4_at_eighth:  # the skip added one scale too fine, interpolated to fit
                h = h + F.interpolate(self.score_pool4(p4), size=h.shape[-2:])
            if pool3:
                h = h + crop(self.score_pool3(p3), pool3_offset, h)
            return crop(self.upscore8(h), final, x)
    return Student


class FCN8sFromThe32sHead(FCN8s):
    def forward(self, x):
        _, _, fc7 = self.trunk(x)
        return F.interpolate(self.score_fr(fc7), size=x.shape[-2:], mode="bilinear")


class FCN32sStudent(FCN32s):
    final = 19

    def forward(self, x):
        _, _, fc7 = self.trunk(x)
        return crop(self.upscore(self.score_fr(fc7)), self.final, x)


class FCN32sCentred(FCN32sStudent):
    final = 16


class FCN32sStub(FCN32s):
    def forward(self, x):
        raise NotImplementedError


def test_fcn_checks_pass_on_the_reference_and_a_rewritten_forward(capsys):
    checks.check_fcn8s(FCN8s)
    checks.check_fcn8s(fcn8s_forward())
    checks.check_fcn32s(FCN32s)
    checks.check_fcn32s(FCN32sStudent)
    assert capsys.readouterr().out.count("passed") == 4


@pytest.mark.parametrize("model_class, message", [
    (fcn8s_forward(pool4=False), "the pool4 skip is missing"),
    (fcn8s_forward(pool3=False), "the pool3 skip is missing"),
    (fcn8s_forward(pool4=False, pool3=False), "both skips are missing"),
    (fcn8s_forward(pool4_offset=0), "pool4 score map is cropped from offset 0; the reference crops it at 5"),
    (fcn8s_forward(pool3_offset=5), "pool3 score map is cropped from offset 5; the reference crops it at 9"),
    (fcn8s_forward(final=32), "upsampled output is cropped from offset 32; the reference crops it at 31"),
    (fcn8s_forward(pool4_at_eighth=True), "differs from the reference"),
    (FCN8sFromThe32sHead, "does not depend on score_pool4, score_pool3, upscore2 and upscore_pool4"),
    (FCN32s, "must be a subclass of FCN8s"),
])
def test_fcn8s_check_catches(model_class, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_fcn8s(model_class)


def test_fcn8s_check_catches_the_stub_and_a_shape_error():
    class Stub(FCN8s):
        def forward(self, x):
            raise NotImplementedError

    class UncroppedSum(FCN8s):
        def forward(self, x):
            p3, p4, fc7 = self.trunk(x)
            return self.upscore2(self.score_fr(fc7)) + self.score_pool4(p4)

    with pytest.raises(CheckFailed, match="not implemented"):
        checks.check_fcn8s(Stub)
    with pytest.raises(CheckFailed, match="pool4's scores join at 1/16"):
        checks.check_fcn8s(UncroppedSum)


@pytest.mark.parametrize("model_class, message", [
    (FCN32sCentred, "upsampled output is cropped from offset 16; the reference crops it at 19"),
    (FCN32sStub, "not implemented"),
    (FCN8s, "must be a subclass of FCN32s"),
])
def test_fcn32s_check_catches(model_class, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_fcn32s(model_class)


# ---------------------------------------------------------------- decoder

def decoder(concat=lambda deep, skip: torch.cat([deep, skip], dim=1), first=None, second=None,
            classify_last=False, skip_fuse=False):
    """A student's ResNetEncoderDecoder with the decoder written out, with one mistake at most."""
    first = first or (lambda deep, skip: F.interpolate(deep, size=skip.shape[-2:], mode="bilinear",
                                                       align_corners=False))
    second = second or (lambda h, images: F.interpolate(h, size=images.shape[-2:], mode="bilinear",
                                                        align_corners=False))

    class Student(ResNetEncoderDecoder):
        def logits(self, images):
            skip = self.layer2(self.layer1(self.stem(images)))
            deep = self.layer4(self.layer3(skip))
            h = concat(first(deep, skip), skip)
            h = h if skip_fuse else self.fuse(h)
            return self.classifier(second(h, images)) if classify_last else second(self.classifier(h), images)

    return Student


def nearest_first(deep, skip):
    return F.interpolate(deep, size=skip.shape[-2:], mode="nearest")


def corners_first(deep, skip):
    return F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=True)


def corners_second(h, images):
    return F.interpolate(h, size=images.shape[-2:], mode="bilinear", align_corners=True)


class DecoderStub(ResNetEncoderDecoder):
    def logits(self, images):
        raise NotImplementedError


class DecoderIgnoringTheEncoder(ResNetEncoderDecoder):
    def logits(self, images):  # fuses zeros in place of the deep features: layer4 never reaches the output
        skip = self.layer2(self.layer1(self.stem(images)))
        deep = torch.zeros(skip.shape[0], 512, *skip.shape[-2:])
        return F.interpolate(self.classifier(self.fuse(torch.cat([deep, skip], dim=1))), size=images.shape[-2:],
                             mode="bilinear", align_corners=False)


def test_decoder_check_passes_on_the_reference_and_on_classifying_after_the_upsampling(capsys):
    checks.check_decoder(ResNetEncoderDecoder)
    checks.check_decoder(decoder())
    checks.check_decoder(decoder(classify_last=True))  # a 1×1 convolution commutes with bilinear upsampling
    assert capsys.readouterr().out.count("check passed: decoder") == 3


@pytest.mark.parametrize("model_class, message", [
    (DecoderStub, "not implemented"),
    (decoder(concat=lambda deep, skip: torch.cat([skip, deep], dim=1)), r"you concatenated \[skip, upsampled\]"),
    (decoder(concat=lambda deep, skip: torch.cat([deep, skip], dim=2)),
     "concatenated along dim=2; the channels are dim=1"),
    (decoder(concat=lambda deep, skip: torch.cat([deep, skip], dim=0)), "concatenated along dim=0"),
    (decoder(concat=lambda deep, skip: deep), "(?s)raised RuntimeError.*dim=1: 512 \\+ 128 = 640"),
    (decoder(first=corners_first), "upsampling #1 uses align_corners=True"),
    (decoder(first=nearest_first), r"upsampling #1 \(layer4 to 1/8\) is nearest-neighbour"),
    (decoder(second=lambda h, images: F.interpolate(h, size=images.shape[-2:], mode="nearest")),
     "upsampling #2 .* is nearest-neighbour"),
    (decoder(second=corners_second), "upsampling #2 uses align_corners=True"),
    (decoder(second=lambda h, images: F.interpolate(h, scale_factor=8, mode="bilinear")), "not by a fixed factor"),
    (decoder(first=lambda deep, skip: F.interpolate(deep, scale_factor=4, mode="bilinear")), "raised RuntimeError"),
    (DecoderIgnoringTheEncoder, "do not depend on layer4"),
    (FCN8s, "must be a subclass of ResNetEncoderDecoder"),
])
def test_decoder_check_catches(model_class, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_decoder(model_class)


# ---------------------------------------------------------------- optimiser and training loop

def adam_trainable(net, lr):
    return torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, fused=True)


def test_optimizer_check_passes_on_adam_over_the_trainable_parameters(capsys):
    checks.check_optimizer(adam_trainable)
    checks.check_optimizer(lambda net, lr: torch.optim.Adam(filter(lambda p: p.requires_grad, net.parameters()), lr))
    assert capsys.readouterr().out.count("check passed: optimiser") == 2


@pytest.mark.parametrize("make_optimizer, message", [
    (stub, "not implemented"),
    (lambda net, lr: torch.optim.Adam(net.parameters(), lr=lr), "parameters that do not require gradients"),
    (lambda net, lr: torch.optim.Adam(net.score.parameters(), lr=lr),
     "(?s)leaves out trainable parameters.*norm.bias and norm.weight"),
    (lambda net, lr: torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr), "trains with Adam"),
    (lambda net, lr: adam_trainable(net, 1e-3), "learning rate"),
    (lambda net, lr: [p for p in net.parameters() if p.requires_grad], "must return a torch optimizer"),
])
def test_optimizer_check_catches(make_optimizer, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_optimizer(make_optimizer)


def epoch_loop(zero_grad=True, train=True, step=True, result="mean"):
    """A student's train_one_epoch with one mistake at most."""
    def train_one_epoch(net, loader, optimizer):
        if train:
            net.train()
        losses = []
        for images, targets in loader:
            if zero_grad:
                optimizer.zero_grad()
            loss = net(images, targets)
            loss.backward()
            if step:
                optimizer.step()
            losses.append(loss if result == "tensor" else loss.item())
        return {"mean": lambda: float(np.mean(losses)), "last": lambda: losses[-1], "sum": lambda: float(sum(losses)),
                "tensor": lambda: sum(losses) / len(losses)}[result]()

    return train_one_epoch


def test_train_epoch_check_passes_on_the_reference_loop(capsys):
    checks.check_train_epoch(epoch_loop())
    assert "check passed: training loop" in capsys.readouterr().out


@pytest.mark.parametrize("train_one_epoch, message", [
    (stub, "not implemented"),
    (epoch_loop(zero_grad=False), "the gradients are never zeroed"),
    (epoch_loop(train=False), "runs the net in eval mode"),
    (epoch_loop(step=False), "did not change the weights"),
    (epoch_loop(result="last"), "returns the last batch's loss"),
    (epoch_loop(result="sum"), "returns the sum of the batch losses"),
    (epoch_loop(result="tensor"), "must return the mean loss"),
])
def test_train_epoch_check_catches(train_one_epoch, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_train_epoch(train_one_epoch)


def test_reference_epoch_without_zero_grad_moves_the_weights_differently():
    loader = checks._probe_batches()
    nets = [checks._loss_probe(seed=12) for _ in range(2)]
    for net, zero_grad in zip(nets, (True, False)):
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.2, momentum=0.9)
        losses = checks._reference_epoch(net, loader, optimizer, zero_grad=zero_grad)
        assert len(losses) == 3
    assert not checks._weights_equal(*nets)


# ---------------------------------------------------------------- validation loop

def _device_of(net):
    return next(net.parameters()).device


def validate_reference(net, loader, num_classes):
    net.eval()
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        for images, targets in loader:
            matrix.update(net(images.to(_device_of(net))).argmax(dim=1), targets)
    return matrix.compute()["miou"]


def validate_handout_style(net, loader, num_classes):
    net.eval()
    predictions, ground_truths = [], []
    with torch.inference_mode():
        for images, targets in loader:
            predictions.extend(net(images.to(_device_of(net))).argmax(dim=1).cpu().numpy())
            ground_truth = targets.numpy().copy()
            ground_truth[ground_truth == 255] = -1
            ground_truths.extend(ground_truth)
    return eval_semantic_segmentation(predictions, ground_truths)["miou"]


def validate_per_batch_mean(net, loader, num_classes):
    net.eval()
    values = []
    with torch.no_grad():
        for images, targets in loader:
            matrix = ConfusionMatrix(num_classes)
            matrix.update(net(images).argmax(dim=1), targets)
            values.append(matrix.compute()["miou"])
    return float(np.mean(values))


def validate_without_eval(net, loader, num_classes):
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        for images, targets in loader:
            matrix.update(net(images).argmax(dim=1), targets)
    return matrix.compute()["miou"]


def validate_with_grad(net, loader, num_classes):
    net.eval()
    matrix = ConfusionMatrix(num_classes)
    for images, targets in loader:
        matrix.update(net(images).argmax(dim=1), targets)
    return matrix.compute()["miou"]


def validate_image_by_image(net, loader, num_classes):
    net.eval()
    matrix = ConfusionMatrix(num_classes)
    with torch.no_grad():
        for images, targets in loader:
            for image, target in zip(images, targets):
                matrix.update(net(image[None]).argmax(dim=1), target[None])
    return matrix.compute()["miou"]


def validate_last_batch_only(net, loader, num_classes):
    net.eval()
    with torch.no_grad():
        for images, targets in loader:
            matrix = ConfusionMatrix(num_classes)
            matrix.update(net(images).argmax(dim=1), targets)
    return matrix.compute()["miou"]


@pytest.mark.parametrize("validate_fn", [validate_reference, validate_handout_style])
def test_validation_check_passes_on_correct_loops(validate_fn, capsys):
    checks.check_validation(validate_fn)
    assert "check passed" in capsys.readouterr().out


@pytest.mark.parametrize("validate_fn, message", [
    (stub, "not implemented"),
    (validate_per_batch_mean, "per-batch"),
    (validate_without_eval, "training mode"),
    (validate_with_grad, "autograd"),
    (validate_image_by_image, "one image at a time"),
    (validate_last_batch_only, "over the set"),
    (lambda net, loader, num_classes: {"miou": 0.5}, "never ran|return the mIoU"),
])
def test_validation_check_catches(validate_fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_validation(validate_fn)


def test_probe_set_separates_pooled_and_per_batch_miou():
    net, loader = checks._probe_set(5, torch.Generator().manual_seed(7))
    pooled = validate_reference(net, loader, 5)
    assert abs(pooled - validate_per_batch_mean(net, loader, 5)) > 0.01
    assert 0.2 < pooled < 0.9


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with pytest.raises(CheckFailed):
        checks.check_validation(validate_without_eval)  # its dropout draws random numbers
    checks.check_cross_entropy(cross_entropy)
    assert torch.equal(before, torch.get_rng_state())
