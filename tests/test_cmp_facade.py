import dataclasses
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from coursekit.data import cmp_facade, synthetic
from coursekit.data.download import DatasetNotFoundError, Resource
from coursekit.data.files import DatasetFileError
from coursekit.data.locate import IncompleteDatasetError


@pytest.fixture(scope="module")
def facade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    synthetic.write_cmp_facade(root, n_base=7, n_extended=3, seed=5)
    return root


@pytest.fixture(autouse=True)
def facade_root_counts(facade_counts):
    facade_counts(7, 3)


def test_split_sizes_follow_the_handout():
    assert cmp_facade.split_sizes(606) == (500, 30, 76)
    assert cmp_facade.split_sizes(378) == (312, 19, 47)
    assert sum(cmp_facade.split_sizes(10)) == 10


def test_splits_cut_the_sorted_list_base_then_extended(facade_root):
    splits = {s: cmp_facade.CMPFacade(facade_root, split=s) for s in cmp_facade.SPLITS}
    photos = [p.name for s in cmp_facade.SPLITS for p in splits[s].photos]
    expected = [f"cmp_b{i:04d}.jpg" for i in range(1, 8)] + [f"cmp_x{i:04d}.jpg" for i in range(1, 4)]
    assert photos == expected
    assert tuple(len(splits[s]) for s in cmp_facade.SPLITS) == cmp_facade.split_sizes(10)


def test_base_only_split(tmp_path, facade_counts):
    facade_counts(12)
    synthetic.write_cmp_facade(tmp_path, n_base=12)
    sizes = tuple(len(cmp_facade.CMPFacade(tmp_path, split=s)) for s in cmp_facade.SPLITS)
    assert sizes == cmp_facade.split_sizes(12)


def test_items_map_labels_1_to_12_onto_0_to_11(facade_root):
    dataset = cmp_facade.CMPFacade(facade_root, split="train")
    image, target = dataset[0]
    raw = np.asarray(Image.open(dataset.photos[0].with_suffix(".png")))
    assert image.mode == "RGB" and target.mode == "P" and image.size == target.size
    assert np.array_equal(np.asarray(target), raw.astype(np.int64) - 1)
    assert np.array_equal(np.asarray(target.getpalette()[:36]).reshape(12, 3), cmp_facade.FACADE_PALETTE)
    pair = cmp_facade.CMPFacade(facade_root, split="train", transforms=lambda im, t: (im.size, np.asarray(t)))[0]
    assert pair[0] == image.size and pair[1].max() <= 11


def test_unknown_label_values_become_ignore(tmp_path, facade_counts):
    facade_counts(1)
    folder = synthetic.write_cmp_facade(tmp_path, n_base=1) / "base"
    labels = np.asarray(Image.open(folder / "cmp_b0001.png")).copy()
    labels[0, :5] = [0, 13, 200, 1, 12]
    edited = Image.fromarray(labels, mode="P")
    edited.putpalette(bytes(range(256)) * 3)
    edited.save(folder / "cmp_b0001.png")
    target = np.asarray(cmp_facade.CMPFacade(tmp_path, split="train")[0][1])
    assert target[0, :5].tolist() == [255, 255, 255, 0, 11]


def test_photo_without_label_map_is_an_error(tmp_path, facade_counts):
    facade_counts(3)
    folder = synthetic.write_cmp_facade(tmp_path, n_base=3) / "base"
    (folder / "cmp_b0002.png").unlink()
    with pytest.raises(IncompleteDatasetError, match="no .png label map"):
        cmp_facade.CMPFacade(tmp_path)


def test_a_half_copied_db_is_incomplete_wherever_it_is_found(tmp_path, monkeypatch, facade_counts):
    facade_counts(378)
    half, full = tmp_path / "half", tmp_path / "full"
    synthetic.write_cmp_facade(half, n_base=20)  # the first 60 of the 1,134 files
    with pytest.raises(IncompleteDatasetError, match="holds 20 cmp_bNNNN photo/label pairs, the official archive 378"):
        cmp_facade.CMPFacade(half)
    monkeypatch.setenv("COURSEKIT_DATA", f"{half}{os.pathsep}{full}")
    with pytest.raises(IncompleteDatasetError, match="the copy is incomplete"):
        cmp_facade.CMPFacade()
    facade_counts(5)
    synthetic.write_cmp_facade(full, n_base=5)
    assert cmp_facade.CMPFacade(split="test").folders[0] == (full / "cmp_facade" / "base").resolve()


def test_bad_split(facade_root):
    with pytest.raises(ValueError, match="split"):
        cmp_facade.CMPFacade(facade_root, split="all")


def test_classes_and_palette_match_the_db(facade_root):
    assert len(cmp_facade.FACADE_CLASSES) == 12 and cmp_facade.FACADE_CLASSES[2] == "window"
    assert cmp_facade.FACADE_PALETTE.shape == (12, 3) and cmp_facade.FACADE_PALETTE.dtype == np.uint8
    xml = (facade_root / "cmp_facade" / "base" / "cmp_b0001.xml").read_bytes()
    assert b"<label>\r3\r</label>\r<labelname>\rwindow\r</labelname>" in xml


def test_revert_input_undoes_normalisation():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    original = torch.rand(2, 3, 5, 4)
    normalised = (original - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    shown = cmp_facade.revert_input(normalised, mean, std)
    assert shown.shape == (2, 5, 4, 3) and shown.dtype == np.float32
    assert np.allclose(shown, original.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert cmp_facade.revert_input(normalised[0], mean, std).shape == (5, 4, 3)
    assert cmp_facade.revert_input(torch.full((3, 1, 1), 100.0), mean, std).max() == 1.0
    with pytest.raises(ValueError, match="C×H×W"):
        cmp_facade.revert_input(torch.zeros(5, 5), mean, std)


def _zip_of(folder, path):
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, f"{folder.name}/{file.name}")
    return path


def _serve_zips(monkeypatch, source, tmp_path, names=("BASE_SPEC", "EXTENDED_SPEC")):
    """Point the specs named at file:// zips of the folders under ``source``."""
    for name in names:
        spec = getattr(cmp_facade, name)
        archive = _zip_of(source / spec.folder.split("/")[1], tmp_path / spec.resources[0].filename)
        resource = Resource(archive.name, (archive.as_uri(),), None)
        monkeypatch.setattr(cmp_facade, name, dataclasses.replace(spec, resources=(resource,)))


def test_download_fetches_base_and_extended_and_checks_contents(data_root, tmp_path, monkeypatch, facade_counts):
    facade_counts(4, 2)
    source = synthetic.write_cmp_facade(tmp_path / "src", n_base=4, n_extended=2)
    _serve_zips(monkeypatch, source, tmp_path)
    dataset = cmp_facade.CMPFacade(split="test", download=True)
    assert [f.name for f in dataset.folders] == ["base", "extended"] and (data_root / "cmp_facade" / "extended").is_dir()
    assert sum(len(cmp_facade.CMPFacade(split=s)) for s in cmp_facade.SPLITS) == 6


def test_an_unreachable_extended_set_leaves_the_base_set_usable(data_root, tmp_path, monkeypatch, capsys, facade_counts):
    facade_counts(4, 2)
    source = synthetic.write_cmp_facade(tmp_path / "src", n_base=4)
    _serve_zips(monkeypatch, source, tmp_path, names=("BASE_SPEC",))
    monkeypatch.setattr(cmp_facade, "EXTENDED_SPEC", dataclasses.replace(cmp_facade.EXTENDED_SPEC, resources=(
        Resource("CMP_facade_DB_extended.zip", ((tmp_path / "nowhere.zip").as_uri(),), None),)))
    dataset = cmp_facade.CMPFacade(split="train", download=True)
    assert [f.name for f in dataset.folders] == ["base"]
    assert "NOTE: the optional CMP Facade extended set could not be fetched" in capsys.readouterr().out
    assert sum(len(cmp_facade.CMPFacade(split=s)) for s in cmp_facade.SPLITS) == 4


def test_download_with_wrong_contents_is_an_error(data_root, tmp_path, monkeypatch, facade_counts):
    facade_counts(378)
    source = synthetic.write_cmp_facade(tmp_path / "src", n_base=2)
    _serve_zips(monkeypatch, source, tmp_path, names=("BASE_SPEC",))
    with pytest.raises(IncompleteDatasetError, match="holds 2 cmp_bNNNN photo/label pairs, the official archive 378"):
        cmp_facade.CMPFacade(download=True)


def test_missing_db_is_one_clear_error(data_root):
    with pytest.raises(DatasetNotFoundError, match="CMP_facade_DB_base.zip") as info:
        cmp_facade.CMPFacade()
    assert "COURSEKIT_DATA" in str(info.value)


def test_mirror_acceptance_numbers(mirror, monkeypatch, facade_counts):
    facade_counts(378, 228)
    sizes = [len(cmp_facade.CMPFacade(split=s)) for s in cmp_facade.SPLITS]
    assert sum(sizes) == 378 and sizes == [312, 19, 47]
    image, target = cmp_facade.CMPFacade(split="val")[0]
    assert image.size == target.size and np.asarray(target).max() <= 11
    palette = Image.open(mirror / "cmp_facade" / "base" / "cmp_b0001.png").getpalette()
    assert np.array_equal(np.asarray(palette[3:39]).reshape(12, 3), cmp_facade.FACADE_PALETTE)


def test_broken_pairs_are_named_when_read(tmp_path, facade_counts):
    facade_counts(3)
    folder = synthetic.write_cmp_facade(tmp_path, n_base=3) / "base"
    labels = Image.open(folder / "cmp_b0001.png")
    labels.resize((labels.width // 2, labels.height)).save(folder / "cmp_b0001.png")
    Image.open(folder / "cmp_b0002.png").convert("RGB").save(folder / "cmp_b0002.png")
    jpeg = (folder / "cmp_b0003.jpg").read_bytes()
    (folder / "cmp_b0003.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    expected = [r"cmp_b0001.png is \d+×\d+ but its photo cmp_b0001.jpg is", r"cmp_b0002.png has mode RGB",
                r"cmp_b0003.jpg is not a readable JPEG image"]
    for number, message in enumerate(expected, start=1):
        with pytest.raises(DatasetFileError, match=message):
            cmp_facade.read_pair(folder / f"cmp_b{number:04d}.jpg")
    with pytest.raises(DatasetFileError, match="cmp_b0001.png is"):
        cmp_facade.CMPFacade(tmp_path, split="train")[0]
    with pytest.raises(DatasetFileError, match="cmp_b0001.png is"):
        cmp_facade.BASE_SPEC.read_all(folder)
