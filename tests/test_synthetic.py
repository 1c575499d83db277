import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from coursekit.data import synthetic
from coursekit.data.matfile import read_mat


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("write, kwargs", [
    (synthetic.write_mnist, dict(n_train=10, n_test=5)),
    (synthetic.write_cifar10, dict(n_per_batch=4, n_test=4)),
    (synthetic.write_voc, dict(n_train=2, n_val=1, size=32)),
    (synthetic.write_cmp_facade, dict(n_base=2, n_extended=1)),
    (synthetic.write_flowers17, dict(n=4, size=32)),
])
def test_writers_are_deterministic_per_seed(tmp_path, write, kwargs):
    first, again, other = (write(tmp_path / name, seed=seed, **kwargs)
                           for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert _tree(first) == _tree(again) and _tree(first) != _tree(other)


def test_write_mnist_official_files(tmp_path):
    folder = synthetic.write_mnist(tmp_path, n_train=20, n_test=10)
    assert folder == tmp_path / "mnist"
    raw = gzip.open(folder / "train-images-idx3-ubyte.gz").read()
    assert raw[:16] == bytes.fromhex("00000803 00000014 0000001c 0000001c") and len(raw) == 16 + 20 * 784
    labels = gzip.open(folder / "t10k-labels-idx1-ubyte.gz").read()
    assert labels[:8] == bytes.fromhex("00000801 0000000a") and sorted(labels[8:]) == list(range(10))


def test_write_cifar10_official_batches(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=10, n_test=20)
    assert sorted(p.name for p in folder.iterdir()) == ["batches.meta", "data_batch_1", "data_batch_2",
                                                        "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (20, 3072) and batch[b"data"].dtype == np.uint8 and len(batch[b"labels"]) == 20
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][7] == b"horse"


def test_write_voc_tree(tmp_path):
    folder = synthetic.write_voc(tmp_path, n_train=3, n_val=2, size=40)
    sets = folder / "ImageSets" / "Segmentation"
    train, val = (sets / "train.txt").read_text().split(), (sets / "val.txt").read_text().split()
    assert len(train) == 3 and len(val) == 2 and (sets / "trainval.txt").read_text().split() == train + val
    target = Image.open(folder / "SegmentationClass" / f"{train[0]}.png")
    assert target.mode == "P" and target.getpalette()[3:6] == [128, 0, 0]
    values = np.asarray(target)
    assert 255 in values and (values > 0).any() and (folder / "JPEGImages" / f"{train[0]}.jpg").is_file()


def test_write_cmp_facade_triples(tmp_path):
    folder = synthetic.write_cmp_facade(tmp_path, n_base=3, n_extended=2)
    assert sorted(p.name for p in (folder / "base").iterdir())[:3] == ["cmp_b0001.jpg", "cmp_b0001.png",
                                                                        "cmp_b0001.xml"]
    assert len(list((folder / "extended").glob("cmp_x*.png"))) == 2
    labels = np.asarray(Image.open(folder / "base" / "cmp_b0002.png"))
    assert labels.min() >= 1 and labels.max() <= 12 and len(np.unique(labels)) >= 8
    assert (folder / "base" / "cmp_b0003.xml").read_bytes().startswith(b"<object>\r<points>\r<x>\r")


def test_write_flowers17_layout(tmp_path):
    folder = synthetic.write_flowers17(tmp_path, n=8, size=48)
    trimap = Image.open(folder / "trimaps" / "image_0008.png")
    assert trimap.mode == "P" and set(np.unique(np.asarray(trimap))) == {0, 1, 255}
    splits = read_mat(folder / "datasplits.mat")
    assert sorted(splits) == sorted(f"{s}{k}" for s in ("trn", "val", "tst") for k in (1, 2, 3))
    assert sorted(np.concatenate([splits[f"{s}2"].ravel() for s in ("trn", "val", "tst")])) == list(range(1, 9))
