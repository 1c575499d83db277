import dataclasses
import gzip
import re
import struct

import numpy as np
import pytest
from PIL import Image

from coursekit.data import mnist, synthetic
from coursekit.data.download import DatasetNotFoundError
from coursekit.data.locate import IncompleteDatasetError, find


@pytest.fixture
def mnist_root(tmp_path):
    synthetic.write_mnist(tmp_path, n_train=30, n_test=20, seed=1)
    return tmp_path


def test_load_mnist_shapes_dtypes_and_range(mnist_root):
    images, labels = mnist.load_mnist("train", root=mnist_root)
    assert images.shape == (30, 784) and images.dtype == np.float32
    assert labels.shape == (30,) and labels.dtype == np.int64 and set(labels) == set(range(10))
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9
    test_images, _ = mnist.load_mnist("test", root=mnist_root)
    assert test_images.shape == (20, 784)


def test_load_mnist_searches_the_data_roots(data_root):
    synthetic.write_mnist(data_root, n_train=10, n_test=10)
    assert mnist.load_mnist("test")[0].shape == (10, 784)


def test_unknown_split_is_rejected(mnist_root):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        mnist.load_mnist("validation", root=mnist_root)


def test_one_hot():
    encoded = mnist.one_hot(np.array([0, 3, 9]))
    assert encoded.dtype == np.float32 and encoded.shape == (3, 10)
    assert np.array_equal(encoded.argmax(1), [0, 3, 9]) and np.all(encoded.sum(1) == 1)
    assert mnist.one_hot(np.array([1, 0]), num_classes=2).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        mnist.one_hot(np.array([10]))
    with pytest.raises(ValueError, match="1-D integer"):
        mnist.one_hot(np.array([0.5]))


def test_mnist_dataset_items(mnist_root):
    train = mnist.MNIST(mnist_root, train=True, transform=np.asarray, target_transform=lambda y: y + 100)
    image, label = train[0]
    assert len(train) == 30 and image.shape == (28, 28) and image.dtype == np.uint8
    assert label == int(train.targets[0]) + 100 and train.data.shape == (30, 28, 28)
    plain, _ = mnist.MNIST(mnist_root, train=False)[0]
    assert isinstance(plain, Image.Image) and plain.mode == "L" and len(mnist.MNIST(mnist_root, train=False)) == 20


def test_read_idx_rejects_truncated_and_corrupt_files(mnist_root):
    path = mnist_root / "mnist" / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        mnist.read_idx(path, mnist.IMAGE_MAGIC)
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        mnist.load_mnist("train", root=mnist_root)


def test_read_idx_checks_magic_and_size(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(28 * 28))
    with pytest.raises(ValueError, match="header"):
        mnist.read_idx(path, mnist.IMAGE_MAGIC)
    with pytest.raises(ValueError, match="magic number 0x801"):
        mnist.read_idx(path, mnist.LABEL_MAGIC)
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 1, 2, 2) + bytes(range(4)))
    assert mnist.read_idx(path, mnist.IMAGE_MAGIC).tolist() == [[[0, 1], [2, 3]]]


def test_mismatched_image_and_label_counts(mnist_root, tmp_path):
    other = tmp_path / "other"
    synthetic.write_mnist(other, n_train=5, n_test=5)
    (mnist_root / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(
        (other / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(ValueError, match="30 images but 5 labels"):
        mnist.load_mnist("train", root=mnist_root)


def test_missing_mnist_names_the_files(data_root):
    with pytest.raises(DatasetNotFoundError, match="download=True") as info:
        mnist.load_mnist("train")
    message = str(info.value)
    assert "MNIST" in message and "COURSEKIT_DATA" in message
    assert all(r.urls[0] in message for r in mnist.RESOURCES)
    assert str(data_root / "mnist" / "t10k-labels-idx1-ubyte.gz") in message


def test_offline_download_is_one_clear_error(data_root, monkeypatch):
    offline = tuple(dataclasses.replace(r, urls=(f"file:///nonexistent/{r.filename}",)) for r in mnist.RESOURCES)
    monkeypatch.setattr(mnist, "SPEC", dataclasses.replace(mnist.SPEC, resources=offline))
    with pytest.raises(DatasetNotFoundError, match="could not be downloaded") as info:
        mnist.MNIST(download=True)
    assert all(r.urls[0] in str(info.value) for r in offline) and not list((data_root / "mnist").iterdir())


def test_mirror_acceptance_numbers(mirror):
    assert mnist.load_mnist("train")[0].shape == (8000, 784)
    assert len(mnist.MNIST(train=False)) == 2000


def _write_gz(path, payload):
    """A gzip file holding ``payload``."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(payload)


@pytest.mark.parametrize("cut", [1, 10, 100, 400])
def test_validate_catches_a_truncated_gz(mnist_root, cut):
    # A truncated gz has the right header but a gzip trailer (ISIZE) of random bytes; it used to show "ok".
    folder = mnist_root / "mnist"
    mnist.SPEC.validate(folder)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        mnist.SPEC.validate(folder)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        find(mnist.SPEC, mnist_root)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        mnist.SPEC.read_all(folder)


@pytest.mark.parametrize("payload, message", [
    (struct.pack(">IIII", 0x801, 2, 28, 28) + bytes(2 * 784), "magic number 0x803"),
    (struct.pack(">IIII", 0x803, 2, 14, 14) + bytes(2 * 196), "MNIST's are 28×28"),
    (struct.pack(">IIII", 0x803, 3, 28, 28) + bytes(2 * 784), "header (3, 28, 28) needs"),
    (b"", "magic number 0x803"),
], ids=["magic", "dims", "count-vs-trailer", "empty"])
def test_validate_checks_magic_dims_and_sizes(mnist_root, payload, message):
    path = mnist_root / "mnist" / "train-images-idx3-ubyte.gz"
    _write_gz(path, payload)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        mnist.SPEC.validate(mnist_root / "mnist")
    assert message in str(info.value)


def test_validate_checks_image_and_label_counts(mnist_root):
    _write_gz(mnist_root / "mnist" / "t10k-labels-idx1-ubyte.gz", struct.pack(">II", 0x801, 3) + bytes(3))
    with pytest.raises(IncompleteDatasetError, match="20 images but 3 labels in t10k-images-idx3-ubyte.gz and "
                                                     "t10k-labels-idx1-ubyte.gz"):
        mnist.SPEC.validate(mnist_root / "mnist")


def test_files_that_are_not_gzip_or_missing_are_errors_naming_them(tmp_path):
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(tmp_path / "absent.gz"))) as info:
        mnist.read_idx(tmp_path / "absent.gz", mnist.IMAGE_MAGIC)
    assert "is missing" in str(info.value)
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(tmp_path / "x.gz"))):
        mnist.read_idx(tmp_path / "x.gz", mnist.IMAGE_MAGIC)


def test_labels_outside_0_to_9_are_errors_naming_the_file(mnist_root):
    path = mnist_root / "mnist" / "train-labels-idx1-ubyte.gz"
    _write_gz(path, struct.pack(">II", 0x801, 30) + bytes([3] * 29 + [10]))
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        mnist.load_mnist("train", root=mnist_root)
    assert "label 10" in str(info.value)


def test_mirror_passes_validate_and_read_all(mirror):
    mnist.SPEC.validate(mirror / "mnist")
    mnist.SPEC.read_all(mirror / "mnist")
