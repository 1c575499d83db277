import dataclasses
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from coursekit.data import flowers, synthetic
from coursekit.data.download import DatasetNotFoundError, Resource
from coursekit.data.locate import IncompleteDatasetError
from coursekit.data.matfile import read_mat, write_mat


@pytest.fixture
def flowers_root(tmp_path):
    synthetic.write_flowers17(tmp_path, n=16, size=40, seed=6)
    return tmp_path


def test_official_split_one_is_used(flowers_root):
    official = read_mat(flowers_root / "flowers17" / "datasplits.mat")
    for split, key in flowers.SPLITS.items():
        dataset = flowers.Flowers17(flowers_root, split=split)
        assert dataset.ids == sorted(official[key].astype(int).ravel().tolist()) and not dataset.synthetic
    assert [len(flowers.Flowers17(flowers_root, split=s)) for s in flowers.SPLITS] == [8, 4, 4]


def test_items_are_image_and_binary_mask_with_ignore_band(flowers_root):
    dataset = flowers.Flowers17(flowers_root, split="train")
    image, target = dataset[0]
    assert image.mode == "RGB" and target.mode == "L" and image.size == target.size == (40, 40)
    assert set(np.unique(np.asarray(target))) == {0, 1, 255}
    pair = flowers.Flowers17(flowers_root, transforms=lambda im, t: (np.asarray(im), np.asarray(t)))[0]
    assert pair[0].shape == (40, 40, 3) and pair[1].shape == (40, 40)


def test_only_images_with_a_trimap_and_a_photo(flowers_root):
    folder = flowers_root / "flowers17"
    (folder / "trimaps" / "image_0001.png").unlink()
    (folder / "jpg" / "image_0002.jpg").unlink()
    ids = [i for s in flowers.SPLITS for i in flowers.Flowers17(flowers_root, split=s).ids]
    assert sorted(ids) == list(range(3, 17))


def test_fallback_split_without_datasplits(flowers_root):
    (flowers_root / "flowers17" / "datasplits.mat").unlink()
    parts = [flowers.split_ids(flowers_root / "flowers17", s) for s in flowers.SPLITS]
    assert [len(p) for p in parts] == [8, 4, 4] and sorted(sum(parts, [])) == list(range(1, 17))
    assert parts == [flowers.split_ids(flowers_root / "flowers17", s) for s in flowers.SPLITS]


def test_split_file_without_the_split_is_an_error(flowers_root):
    write_mat(flowers_root / "flowers17" / "datasplits.mat", {"other": np.arange(3)})
    with pytest.raises(ValueError, match="'trn1'"):
        flowers.Flowers17(flowers_root)


def test_trimap_to_mask_palette_and_rgb():
    indices = Image.fromarray(np.array([[0, 1, 2, 255]], np.uint8), mode="P")
    assert np.asarray(flowers.trimap_to_mask(indices)).tolist() == [[0, 1, 255, 255]]
    rgb = Image.fromarray(np.array([[[0, 0, 0], [128, 0, 0], [224, 224, 192], [10, 200, 10]]], np.uint8))
    mask = flowers.trimap_to_mask(rgb)
    assert mask.mode == "L" and np.asarray(mask).tolist() == [[0, 1, 255, 255]]


def test_trimap_of_another_size_is_resized(flowers_root):
    path = flowers_root / "flowers17" / "trimaps" / "image_0001.png"
    Image.open(path).resize((20, 20), Image.NEAREST).save(path)
    dataset = flowers.Flowers17(flowers_root, split="train")
    dataset.ids = [1]
    image, target = dataset[0]
    assert target.size == image.size == (40, 40)


def test_ci_profile_falls_back_to_synthetic_flowers(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setattr(flowers, "SYNTHETIC_COUNT", 8)
    monkeypatch.setattr(flowers, "SYNTHETIC_SIZE", 32)
    dataset = flowers.Flowers17(split="val", download=True)
    assert dataset.synthetic and len(dataset) == 2 and dataset.folder.is_relative_to(data_root / "synthetic")
    assert capsys.readouterr().out.startswith("NOTE: Oxford 17 Flowers")


def test_missing_flowers_outside_ci_is_one_clear_error(data_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "full")
    monkeypatch.delenv("COURSEKIT_SYNTHETIC", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        flowers.Flowers17()
    for resource in flowers.RESOURCES:
        assert resource.urls[0] in str(info.value)
    with pytest.raises(ValueError, match="split"):
        flowers.Flowers17(split="trainval")


def test_write_synthetic_lays_out_flowers(tmp_path, monkeypatch):
    monkeypatch.setattr(flowers, "SYNTHETIC_COUNT", 4)
    flowers.write_synthetic(tmp_path)
    assert flowers.SPEC.is_complete(tmp_path / "flowers17") and (tmp_path / "flowers17" / "datasplits.mat").is_file()


def test_download_unpacks_the_official_files(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    source = synthetic.write_flowers17(tmp_path / "src", n=8, size=32)
    files = {}
    for sub in ("jpg", "trimaps"):
        files[sub] = tmp_path / ("17flowers.tgz" if sub == "jpg" else "trimaps.tgz")
        with tarfile.open(files[sub], "w:gz") as tar:
            tar.add(source / sub, arcname=sub)
    files["mat"] = source / "datasplits.mat"
    resources = tuple(Resource(path.name, (path.as_uri(),), None) for path in files.values())
    monkeypatch.setattr(flowers, "SPEC", dataclasses.replace(flowers.SPEC, resources=resources))
    assert len(flowers.Flowers17(split="test", download=True)) == 2
    assert sorted(p.name for p in (data_root / "flowers17").iterdir()) == [
        "17flowers.tgz", "datasplits.mat", "jpg", "trimaps", "trimaps.tgz"]


def _item_of(root, image_id):
    """The ``(image, target)`` item of ``image_{image_id:04d}``, from whichever split holds it."""
    for split in flowers.SPLITS:
        dataset = flowers.Flowers17(root, split=split)
        if image_id in dataset.ids:
            return dataset[dataset.ids.index(image_id)]
    raise AssertionError(f"no split holds image {image_id}")


def test_the_synthetic_stand_in_passes_validate_and_read_all(flowers_root):
    flowers.SPEC.validate(flowers_root / "flowers17")
    flowers.SPEC.read_all(flowers_root / "flowers17")


@pytest.mark.parametrize("culprit, damage, message", [
    ("trimaps/image_0003.png", lambda path: path.write_bytes(path.read_bytes()[:200]), "not a readable PNG image"),
    ("trimaps/image_0003.png", lambda path: path.write_bytes(b"GIF89a"), "not a readable PNG image"),
    ("trimaps/image_0003.png", lambda path: Image.fromarray(np.zeros((40, 40), np.uint8), mode="P").save(path),
     "marks no flower"),
    ("trimaps/image_0003.png", lambda path: Image.new("RGB", (40, 40), (0, 0, 255)).save(path), "marks no flower"),
    ("jpg/image_0003.jpg", lambda path: path.write_bytes(b"\xff\xd8\xff"), "not a readable JPEG image"),
], ids=["truncated-trimap", "gif-as-png", "all-background", "rgb-without-flower", "broken-photo"])
def test_unreadable_or_unexpected_files_are_errors_naming_them(flowers_root, culprit, damage, message):
    folder = flowers_root / "flowers17"
    damage(folder / culprit)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder / culprit))) as info:
        _item_of(flowers_root, 3)
    assert message in str(info.value)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder / culprit))):
        flowers.SPEC.read_all(folder)


@pytest.mark.parametrize("splits, message", [
    ({"trn1": np.arange(1, 9), "val1": np.zeros(0), "tst1": np.arange(9, 17)}, "'val' split"),
    ({"trn1": np.arange(1, 9), "val1": np.arange(9, 13), "tst1": np.array([13.5, 14])}, "not image ids"),
    ({"trn1": np.arange(1, 9), "val1": np.arange(9, 13), "tst1": np.array([np.nan])}, "not image ids"),
], ids=["empty-split", "fractional-id", "nan-id"])
def test_split_files_without_usable_ids_are_errors_naming_them(flowers_root, splits, message):
    folder = flowers_root / "flowers17"
    write_mat(folder / "datasplits.mat", splits)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder))) as info:
        flowers.SPEC.validate(folder)
    assert message in str(info.value)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder))):
        flowers.Flowers17(flowers_root, split="train")


def test_a_corrupt_split_file_is_the_kits_error(flowers_root):
    path = flowers_root / "flowers17" / "datasplits.mat"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        flowers.Flowers17(flowers_root)


def test_a_folder_without_labelled_images_is_the_kits_error(flowers_root):
    folder = flowers_root / "flowers17"
    for trimap in (folder / "trimaps").iterdir():
        trimap.unlink()
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder))) as info:
        flowers.SPEC.validate(folder)
    assert "no trimap with a matching photo" in str(info.value)
