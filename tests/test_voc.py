import dataclasses
import hashlib
import re
import tarfile
import traceback

import numpy as np
import pytest
from PIL import Image

from coursekit.data import synthetic, voc
from coursekit.data.download import DatasetNotFoundError, Resource
from coursekit.data.locate import IncompleteDatasetError


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    synthetic.write_voc(root, n_train=6, n_val=3, size=48, seed=4)
    return root


def test_reads_the_official_layout(voc_root):
    train = voc.VOCSegmentation(voc_root, image_set="train")
    assert len(train) == 6 and len(voc.VOCSegmentation(voc_root, image_set="val")) == 3
    assert len(voc.VOCSegmentation(voc_root, image_set="trainval")) == 9 and not train.synthetic
    image, target = train[0]
    assert image.mode == "RGB" and target.mode == "P" and image.size == target.size == (48, 48)
    values = set(np.unique(np.asarray(target)))
    assert 0 in values and 255 in values and values - {0, 255} <= set(synthetic.VOC_SHAPES)


def test_transforms_get_image_and_target(voc_root):
    dataset = voc.VOCSegmentation(voc_root, transforms=lambda im, t: (np.asarray(im), np.asarray(t)))
    image, target = dataset[1]
    assert image.shape == (48, 48, 3) and target.shape == (48, 48) and target.dtype == np.uint8


def test_sanity_check_keeps_one_image(voc_root):
    full = voc.VOCSegmentation(voc_root, image_set="val")
    single = voc.VOCSegmentation(voc_root, image_set="val", sanity_check=2)
    assert len(single) == 1 and single.ids == [full.ids[2]]
    assert np.array_equal(np.asarray(single[0][1]), np.asarray(full[2][1]))
    with pytest.raises(IndexError, match="outside the 3 val images"):
        voc.VOCSegmentation(voc_root, image_set="val", sanity_check=3)


def test_bad_image_set_and_bad_target(voc_root, tmp_path):
    with pytest.raises(ValueError, match="image_set"):
        voc.VOCSegmentation(voc_root, image_set="test")
    folder = synthetic.write_voc(tmp_path, n_train=1, n_val=1, size=32)
    name = (folder / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    Image.new("RGB", (32, 32)).save(folder / "SegmentationClass" / f"{name}.png")
    with pytest.raises(ValueError, match="palette"):
        voc.VOCSegmentation(tmp_path)[0]


def test_palette_and_classes():
    assert voc.VOC_PALETTE.shape == (256, 3) and voc.VOC_PALETTE.dtype == np.uint8
    assert voc.VOC_PALETTE[0].tolist() == [0, 0, 0] and voc.VOC_PALETTE[1].tolist() == [128, 0, 0]
    assert voc.VOC_PALETTE[15].tolist() == [192, 128, 128] and voc.VOC_PALETTE[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in voc.voc_palette(21)}) == 21
    assert len(voc.VOC_CLASSES) == 21 and voc.VOC_CLASSES[0] == "background" and voc.VOC_CLASSES[15] == "person"


def test_ci_profile_falls_back_to_synthetic_data(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setattr(voc, "SYNTHETIC_TRAIN", 4)
    monkeypatch.setattr(voc, "SYNTHETIC_VAL", 2)
    monkeypatch.setattr(voc, "SYNTHETIC_SIZE", 32)
    train = voc.VOCSegmentation(download=True)
    assert train.synthetic and len(train) == 4 and train.folder.is_relative_to(data_root / "synthetic")
    assert capsys.readouterr().out.startswith("NOTE: PASCAL VOC 2012")
    assert len(voc.VOCSegmentation(image_set="val")) == 2


def test_missing_voc_outside_ci_is_one_clear_error(data_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    monkeypatch.delenv("COURSEKIT_SYNTHETIC", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        voc.VOCSegmentation()
    message = str(info.value)
    assert "PASCAL VOC 2012" in message and voc.RESOURCES[0].urls[0] in message and "COURSEKIT_DATA" in message
    assert str(data_root / "voc" / "VOCtrainval_11-May-2012.tar") in message and "COURSEKIT_SYNTHETIC=1" in message
    assert "During handling" not in "".join(traceback.format_exception(info.value))


def test_write_synthetic_lays_out_voc(tmp_path, monkeypatch):
    monkeypatch.setattr(voc, "SYNTHETIC_TRAIN", 2)
    monkeypatch.setattr(voc, "SYNTHETIC_VAL", 1)
    voc.write_synthetic(tmp_path)
    assert voc.SPEC.is_complete(tmp_path / voc.SPEC.folder)


def test_download_unpacks_the_official_archive_layout(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    source = synthetic.write_voc(tmp_path / "src", n_train=2, n_val=1, size=32)
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source.parent, arcname="VOCdevkit")
    resource = Resource(archive.name, (archive.as_uri(),), "md5:" + hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(voc, "SPEC", dataclasses.replace(voc.SPEC, resources=(resource,)))
    dataset = voc.VOCSegmentation(image_set="val", download=True)
    assert len(dataset) == 1 and not dataset.synthetic
    assert dataset.folder == data_root.resolve() / "voc" / "VOCdevkit" / "VOC2012"


def test_ci_profile_does_not_download(data_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setattr(voc, "SYNTHETIC_TRAIN", 2)
    monkeypatch.setattr(voc, "SYNTHETIC_VAL", 1)
    monkeypatch.setattr("coursekit.data.download._stream", lambda *a, **k: pytest.fail("no downloads in ci"))
    assert voc.VOCSegmentation(download=True).synthetic


@pytest.fixture
def small_voc(tmp_path):
    """A VOC folder of 2 train and 1 val images (32×32) under ``tmp_path``; returns ``(folder, first train id)``."""
    folder = synthetic.write_voc(tmp_path, n_train=2, n_val=1, size=32)
    return folder, (folder / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]


def test_the_synthetic_stand_in_passes_validate_and_read_all(voc_root):
    folder = voc_root / voc.SPEC.folder
    voc.SPEC.validate(folder)
    voc.SPEC.read_all(folder)


@pytest.mark.parametrize("damage, culprit", [
    (lambda folder, name: (folder / "ImageSets/Segmentation/val.txt").write_text("\n"),
     "ImageSets/Segmentation/val.txt"),
    (lambda folder, name: (folder / "ImageSets/Segmentation/trainval.txt").unlink(),
     "ImageSets/Segmentation/trainval.txt"),
    (lambda folder, name: (folder / f"SegmentationClass/{name}.png").unlink(), "SegmentationClass/{name}.png"),
    (lambda folder, name: (folder / f"JPEGImages/{name}.jpg").unlink(), "JPEGImages/{name}.jpg"),
], ids=["empty-list", "missing-list", "missing-map", "missing-photo"])
def test_validate_checks_the_list_files_and_listed_images(small_voc, damage, culprit):
    folder, name = small_voc
    voc.SPEC.validate(folder)
    damage(folder, name)
    path = folder / culprit.format(name=name)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        voc.SPEC.validate(folder)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        voc.VOCSegmentation(folder.parents[2])


def _truncate(path):
    """Keep the first half of the file."""
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


def _relabel(path, value):
    """Set the top-left pixel of a palette class map to ``value``, keeping its palette."""
    target = Image.open(path)
    values = np.asarray(target).copy()
    values[0, 0] = value
    relabelled = Image.fromarray(values, mode="P")
    relabelled.putpalette(target.getpalette())
    relabelled.save(path)


@pytest.mark.parametrize("damage, culprit, message", [
    (lambda photo, target: _truncate(photo), "photo", "not a readable JPEG image"),
    (lambda photo, target: _truncate(target), "target", "not a readable PNG image"),
    (lambda photo, target: target.write_bytes(b"not a png"), "target", "not a readable PNG image"),
    (lambda photo, target: target.write_bytes(photo.read_bytes()), "target", "not a readable PNG image"),
    (lambda photo, target: Image.open(target).resize((16, 16)).save(target), "target", "is 16×16 but its photo"),
    (lambda photo, target: _relabel(target, 30), "target", "holds values [30]"),
    (lambda photo, target: _relabel(target, 21), "target", "holds values [21]"),
], ids=["truncated-jpeg", "truncated-png", "garbage-png", "jpeg-as-png", "other-size", "value-30", "value-21"])
def test_unreadable_or_wrong_images_are_errors_naming_the_file(small_voc, damage, culprit, message):
    folder, name = small_voc
    files = {"photo": folder / "JPEGImages" / f"{name}.jpg", "target": folder / "SegmentationClass" / f"{name}.png"}
    damage(files["photo"], files["target"])
    dataset = voc.VOCSegmentation(folder.parents[2])
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(files[culprit]))) as info:
        dataset[dataset.ids.index(name)]
    assert message in str(info.value)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(files[culprit]))):
        voc.SPEC.read_all(folder)


def test_void_and_all_class_indices_are_accepted(small_voc):
    folder, name = small_voc
    _relabel(folder / "SegmentationClass" / f"{name}.png", 20)
    dataset = voc.VOCSegmentation(folder.parents[2])
    assert 20 in np.asarray(dataset[dataset.ids.index(name)][1])


def test_padded_side_fits_the_longest_photo_rounded_to_the_stride(tmp_path):
    synthetic.write_voc(tmp_path, n_train=1, n_val=3, size=48, seed=0)
    val = voc.VOCSegmentation(tmp_path, image_set="val")
    assert val.padded_side() == 64  # 48-pixel photos, rounded up to a multiple of 32
    assert val.padded_side(multiple=1) == 48 and val.padded_side(count=1, cap=40) == 40
    photo = tmp_path / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{val.ids[0]}.jpg"
    Image.new("RGB", (500, 375)).save(photo)  # a real VOC photo's size
    assert val.padded_side() == 512 and val.padded_side(cap=256) == 256
    with pytest.raises(ValueError, match="at least one image"):
        val.padded_side(count=0)
