"""Tests for coursekit.metrics: hand-made cases, chainercv's published cases, torchmetrics cross-checks."""
import warnings

import numpy as np
import pytest
import torch

from coursekit import metrics
from coursekit.metrics import (ConfusionMatrix, class_accuracy, confusion_matrix, eval_semantic_segmentation,
                               mean_class_accuracy, mean_iou, per_class_iou, pixel_accuracy, scores)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# chainercv's worked example: one 2×3 image, one ignored (-1) ground-truth pixel.
PRED = np.array([[1, 1, 0], [0, 0, 1]])
GT = np.array([[1, 0, 0], [0, -1, 1]])
# A matrix with a class absent from the ground truth (row 2) and one absent from both (class 3).
CM = np.array([[3, 1, 0, 0],
               [2, 4, 1, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 0]])


def brute_force_matrix(pred, target, num_classes, ignore_index):
    """The confusion matrix by a plain Python loop, as a reference."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, t in zip(np.ravel(pred), np.ravel(target)):
        if t != ignore_index and 0 <= t < num_classes:
            out[t, p] += 1
    return out


def random_labels(shape, num_classes, seed, ignore_fraction=0.1):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, num_classes, shape, generator=gen)
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < ignore_fraction] = 255
    return pred, target


# --- confusion_matrix -------------------------------------------------------------------------

def test_confusion_matrix_chainercv_examples():
    assert confusion_matrix(PRED, GT, 2, ignore_index=-1).tolist() == [[2, 1], [0, 2]]
    all_wrong = confusion_matrix(np.zeros((2, 3), int), np.array([[1, 1, 1], [1, 1, -1]]), 2, ignore_index=None)
    assert all_wrong.tolist() == [[0, 0], [5, 0]]


def test_confusion_matrix_matches_python_loop():
    pred, target = random_labels((3, 7, 9), 5, seed=1)
    target[0, 0, :3] = torch.tensor([5, 17, -2])  # out of range: skipped
    got = confusion_matrix(pred, target, 5)
    assert got.dtype == torch.int64 and got.shape == (5, 5)
    np.testing.assert_array_equal(got.numpy(), brute_force_matrix(pred.numpy(), target.numpy(), 5, 255))
    assert int(got.sum()) == int(((target >= 0) & (target < 5)).sum())


def test_confusion_matrix_ignore_index_inside_range_and_small_dtypes():
    pred = torch.tensor([0, 1, 2, 1], dtype=torch.uint8)
    target = torch.tensor([0, 0, 2, 1], dtype=torch.uint8)
    got = confusion_matrix(pred, target, 3, ignore_index=0)
    assert got.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="positive integer"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"predicted labels must lie in \[0, 2\)"):
        confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 1]), 2)


def test_confusion_matrix_prediction_out_of_range_is_fine_where_ignored():
    got = confusion_matrix(torch.tensor([7, 1]), torch.tensor([255, 1]), 2)
    assert got.tolist() == [[0, 0], [0, 1]]


# --- scores of a matrix -----------------------------------------------------------------------

def test_scores_of_a_hand_matrix():
    for cm in (CM, torch.from_numpy(CM)):
        assert pixel_accuracy(cm) == pytest.approx(7 / 11)
        np.testing.assert_allclose(class_accuracy(cm), [3 / 4, 4 / 7, np.nan, np.nan])
        assert mean_class_accuracy(cm) == pytest.approx((3 / 4 + 4 / 7) / 2)
        np.testing.assert_allclose(per_class_iou(cm), [3 / 6, 4 / 8, 0.0, np.nan])
        assert mean_iou(cm) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_scores_dict_and_empty_matrix_gives_nan_without_warnings():
    result = scores(CM)
    assert set(result) == {"iou", "miou", "pixel_accuracy", "class_accuracy", "mean_class_accuracy"}
    assert result["iou"].dtype == np.float64 and result["class_accuracy"].shape == (4,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = scores(np.zeros((3, 3), dtype=np.int64))
    assert np.isnan(empty["pixel_accuracy"]) and np.isnan(empty["miou"]) and np.isnan(empty["mean_class_accuracy"])
    assert np.isnan(empty["iou"]).all()


def test_scores_reject_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        pixel_accuracy(np.zeros((2, 3)))


# --- ConfusionMatrix ----------------------------------------------------------------------------

def test_streaming_equals_one_shot_and_reset():
    pred, target = random_labels((6, 8, 8), 4, seed=2)
    streaming = ConfusionMatrix(4)
    for start in range(0, 6, 2):
        streaming.update(pred[start:start + 2], target[start:start + 2])
    expected = confusion_matrix(pred, target, 4)
    assert torch.equal(streaming.matrix, expected)
    result = streaming.compute()
    assert result["miou"] == pytest.approx(mean_iou(expected))
    assert isinstance(result["pixel_accuracy"], float)
    assert "counted=" in repr(streaming)
    streaming.reset()
    assert int(streaming.matrix.sum()) == 0 and streaming.matrix.shape == (4, 4)


def test_confusion_matrix_class_on_classification_labels_and_absent_classes():
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    result = cm.compute()
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)
    assert np.isnan(result["class_accuracy"][2]) and np.isnan(result["iou"][2])
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_confusion_matrix_class_rejects_bad_num_classes():
    with pytest.raises(ValueError, match="positive integer"):
        ConfusionMatrix(2.5)


@cuda_only
def test_confusion_matrix_stays_on_the_inputs_device():
    pred, target = random_labels((2, 5, 5), 3, seed=3)
    cm = ConfusionMatrix(3)
    cm.update(pred.cuda(), target.cuda())
    assert cm.matrix.device.type == "cuda"
    assert torch.equal(cm.matrix.cpu(), confusion_matrix(pred, target, 3))
    pinned = ConfusionMatrix(3, device="cpu")
    pinned.update(pred.cuda(), target.cuda())
    assert pinned.matrix.device.type == "cpu"
    assert torch.equal(pinned.matrix, cm.matrix.cpu())


def test_confusion_matrix_device_argument_on_cpu():
    cm = ConfusionMatrix(3, device="cpu")
    assert cm.matrix.device.type == "cpu"
    cm.update(torch.tensor([2]), torch.tensor([2]))
    assert cm.matrix[2, 2] == 1


# --- torchmetrics cross-checks -------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_torchmetrics(seed):
    classification = pytest.importorskip("torchmetrics.classification")
    num_classes = 5
    pred, target = random_labels((4, 16, 16), num_classes, seed=seed)
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    result = cm.compute()

    tm_matrix = classification.MulticlassConfusionMatrix(num_classes, ignore_index=255)(pred, target)
    assert torch.equal(cm.matrix, tm_matrix.long())
    tm_iou = classification.MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)(pred, target)
    np.testing.assert_allclose(result["iou"], tm_iou.double().numpy(), rtol=1e-6)
    tm_miou = classification.MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255)(pred, target)
    assert result["miou"] == pytest.approx(float(tm_miou), rel=1e-6)
    tm_pixel = classification.MulticlassAccuracy(num_classes, average="micro", ignore_index=255)(pred, target)
    assert result["pixel_accuracy"] == pytest.approx(float(tm_pixel), rel=1e-6)
    tm_class = classification.MulticlassAccuracy(num_classes, average="none", ignore_index=255)(pred, target)
    np.testing.assert_allclose(result["class_accuracy"], tm_class.double().numpy(), rtol=1e-6)


# --- eval_semantic_segmentation (chainercv-compatible) ----------------------------------------------

@pytest.mark.parametrize("pred_labels, gt_labels, iou, pixel_acc, class_acc", [
    # chainercv's published cases
    (iter(np.repeat(PRED[None], 2, axis=0)), iter(np.repeat(GT[None], 2, axis=0)),
     [4 / 6, 4 / 6], 4 / 5, [2 / 3, 2 / 2]),
    (np.zeros((1, 2, 3), int), np.ones((1, 2, 3), int), [0, 0], 0 / 6, [np.nan, 0]),
    # a list of arrays of different sizes
    ([PRED, np.array([[2]])], [GT, np.array([[2]])], [2 / 3, 2 / 3, 1], 5 / 6, [2 / 3, 1, 1]),
])
def test_eval_semantic_segmentation_chainercv_cases(pred_labels, gt_labels, iou, pixel_acc, class_acc):
    result = eval_semantic_segmentation(pred_labels, gt_labels)
    np.testing.assert_allclose(result["iou"], iou)
    assert result["pixel_accuracy"] == pytest.approx(pixel_acc)
    np.testing.assert_allclose(result["class_accuracy"], class_acc)
    assert result["miou"] == pytest.approx(np.nanmean(iou))
    assert result["mean_class_accuracy"] == pytest.approx(np.nanmean(class_acc))


def test_eval_semantic_segmentation_confusion_like_chainercv():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 2, size=(10, 16, 16))
    gt = rng.integers(-1, 2, size=(10, 16, 16))
    expected = brute_force_matrix(pred, gt, 2, -1)
    expected_iou = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
    np.testing.assert_allclose(eval_semantic_segmentation(pred, gt)["iou"], expected_iou)


def test_eval_semantic_segmentation_number_of_classes_is_max_label_plus_one():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 30, size=(2, 3, 3))
    gt = rng.integers(-1, 30, size=(2, 3, 3))
    size = max(pred.max(), gt.max()) + 1
    assert eval_semantic_segmentation(pred, gt)["iou"].shape == (size,)


def test_eval_semantic_segmentation_absent_class_is_nan_and_skipped_in_means():
    result = eval_semantic_segmentation([np.array([[0, 2], [2, 0]])], [np.array([[0, 2], [0, -1]])])
    assert np.isnan(result["iou"][1]) and np.isnan(result["class_accuracy"][1])
    np.testing.assert_allclose(result["iou"][[0, 2]], [1 / 2, 1 / 2])
    assert result["miou"] == pytest.approx(1 / 2)


def test_eval_semantic_segmentation_agrees_with_confusion_matrix_class():
    pred, target = random_labels((3, 6, 6), 4, seed=5)
    target[target == 255] = -1
    target[0, 0, 0], pred[0, 0, 0] = 3, 3  # make the largest label appear, so K = 4
    cm = ConfusionMatrix(4, ignore_index=-1)
    cm.update(pred, target)
    result = eval_semantic_segmentation(pred.numpy(), target.numpy())
    for key, value in cm.compute().items():
        np.testing.assert_allclose(result[key], value)


def test_eval_semantic_segmentation_errors():
    with pytest.raises(ValueError, match="ndim of labels should be two."):
        eval_semantic_segmentation([PRED[None]], [GT[None]])
    with pytest.raises(ValueError, match="Shape of ground truth and prediction should be same."):
        eval_semantic_segmentation([PRED], [GT[:, :2]])
    with pytest.raises(ValueError, match="Length of input iterables need to be same"):
        eval_semantic_segmentation([PRED, PRED], [GT])
    with pytest.raises(ValueError, match="Length of input iterables need to be same"):
        eval_semantic_segmentation(iter([PRED]), iter([GT, GT]))


def test_eval_semantic_segmentation_against_chainercv():
    chainercv_eval = pytest.importorskip("chainercv.evaluations")
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 6, size=(4, 10, 12))
    gt = rng.integers(-1, 6, size=(4, 10, 12))
    expected = chainercv_eval.eval_semantic_segmentation(pred, gt)
    result = eval_semantic_segmentation(pred, gt)
    for key in expected:
        np.testing.assert_allclose(result[key], expected[key])


def test_public_names():
    assert set(metrics.__all__) <= set(dir(metrics))
