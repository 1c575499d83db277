import dataclasses
import tarfile

import numpy as np
import pytest
from PIL import Image

from coursekit.data import flowers, synthetic
from coursekit.data.download import DatasetNotFoundError, Resource
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
