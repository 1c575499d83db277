import dataclasses
import hashlib
import os
import pickle
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from coursekit.data import cifar, synthetic
from coursekit.data.download import Resource


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    synthetic.write_cifar10(root, n_per_batch=20, n_test=30, seed=2)
    return root


def test_reads_official_batches(cifar_root):
    train, test = cifar.CIFAR10(cifar_root), cifar.CIFAR10(cifar_root, train=False)
    assert train.data.shape == (100, 32, 32, 3) and train.data.dtype == np.uint8 and len(test) == 30
    assert train.targets.dtype == np.int64 and set(train.targets) == set(range(10))
    assert train.classes == list(cifar.CIFAR10_CLASSES)
    batch = cifar.read_batch(cifar_root / "cifar10" / "cifar-10-batches-py" / "data_batch_1")
    first = batch["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(train.data[0], first) and train.targets[0] == batch["labels"][0]


def test_items_and_transforms(cifar_root):
    dataset = cifar.CIFAR10(cifar_root, train=False, transform=np.asarray, target_transform=str)
    image, target = dataset[3]
    assert image.shape == (32, 32, 3) and target == str(dataset.targets[3])
    assert isinstance(cifar.CIFAR10(cifar_root, train=False)[0][0], Image.Image)


def test_class_subset_is_reindexed(cifar_root):
    full = cifar.CIFAR10(cifar_root, train=False)
    subset = cifar.CIFAR10(cifar_root, train=False, classes=["cat", "airplane"])
    keep = np.isin(full.targets, [3, 0])
    assert subset.classes == ["cat", "airplane"] and len(subset) == keep.sum()
    assert np.array_equal(subset.targets, np.where(full.targets[keep] == 3, 0, 1))
    assert np.array_equal(subset.data, full.data[keep])
    horses = cifar.CIFAR10(cifar_root, classes=["horse"])
    assert set(horses.targets) == {0} and len(horses) == (cifar.CIFAR10(cifar_root).targets == 7).sum()


@pytest.mark.parametrize("classes", [["unicorn"], [], ["cat", "cat"]])
def test_bad_class_lists_are_rejected(cifar_root, classes):
    with pytest.raises(ValueError, match="distinct names"):
        cifar.CIFAR10(cifar_root, classes=classes)


def test_str_keys_are_read_too(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}, f)
    batch = cifar.read_batch(path)
    assert batch["labels"] == [1, 2] and batch["data"].shape == (2, 3072)


def test_batches_pickled_by_numpy_2_load_under_numpy_1(tmp_path, monkeypatch):
    path = tmp_path / "data_batch_1"
    batch = {b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [3, 5]}
    # Protocol 2 names classes in text (GLOBAL opcodes): write NumPy 2's module names whichever NumPy runs here.
    path.write_bytes(pickle.dumps(batch, protocol=2).replace(b"cnumpy.core.", b"cnumpy._core."))
    assert b"cnumpy._core.multiarray\n_reconstruct" in path.read_bytes()
    # As under NumPy 1: no numpy._core, so importing numpy._core.multiarray fails; numpy.core has it.
    monkeypatch.delattr(np, "_core", raising=False)
    monkeypatch.setitem(sys.modules, "numpy._core.multiarray", None)
    with pytest.raises(ImportError):
        pickle.loads(path.read_bytes())
    loaded = cifar.read_batch(path)
    assert np.array_equal(loaded["data"], batch[b"data"]) and loaded["labels"] == [3, 5]


def test_batch_files_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="not a readable CIFAR batch"):
        cifar.read_batch(path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR batch"):
        cifar.read_batch(path)


def test_wrongly_shaped_batch_is_rejected(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match="N×3072"):
        cifar.CIFAR10(tmp_path, train=False)


def test_normalisation_constants():
    assert len(cifar.CIFAR10_MEAN) == len(cifar.CIFAR10_STD) == 3
    assert all(0.4 < m < 0.5 for m in cifar.CIFAR10_MEAN) and all(0.24 < s < 0.27 for s in cifar.CIFAR10_STD)


def _expected(data: np.ndarray, pad: int = 0) -> torch.Tensor:
    x = torch.nn.functional.pad(torch.as_tensor(data).permute(0, 3, 1, 2).float() / 255, (pad,) * 4)
    return (x - torch.tensor(cifar.CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(cifar.CIFAR10_STD).view(1, 3, 1, 1)


def test_batch_loader_plain_batches(cifar_root):
    dataset = cifar.CIFAR10(cifar_root, train=False)
    loader = cifar.BatchLoader(dataset, batch_size=8, device="cpu")
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and [len(y) for _, y in batches] == [8, 8, 8, 6]
    images = torch.cat([x for x, _ in batches])
    assert images.dtype == torch.float32 and images.shape == (30, 3, 32, 32)
    assert torch.allclose(images, _expected(dataset.data), atol=1e-6)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.as_tensor(dataset.targets))


def test_batch_loader_shuffle_is_deterministic_per_generator(cifar_root):
    dataset = cifar.CIFAR10(cifar_root, train=False)

    def labels(seed):
        loader = cifar.BatchLoader(dataset, 30, shuffle=True, generator=torch.Generator().manual_seed(seed),
                                   device="cpu")
        return next(iter(loader))[1]

    assert torch.equal(labels(0), labels(0)) and not torch.equal(labels(0), labels(1))
    assert sorted(labels(0).tolist()) == sorted(dataset.targets.tolist())


def test_batch_loader_augments_by_crop_and_flip(cifar_root):
    dataset = cifar.CIFAR10(cifar_root, train=False)
    loader = cifar.BatchLoader(dataset, 30, augment=True, generator=torch.Generator().manual_seed(3), device="cpu")
    augmented = next(iter(loader))[0]
    padded = _expected(dataset.data, pad=4)
    flips = 0
    for i in range(30):
        crops = {(dy, dx): padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
        matches = [(place, flip) for place, crop in crops.items() for flip in (False, True)
                   if torch.allclose(augmented[i], crop.flip(-1) if flip else crop, atol=1e-5)]
        assert matches, f"image {i} is not a zero-padded crop (maybe flipped) of the original"
        flips += matches[0][1]
    assert 0 < flips < 30
    again = next(iter(cifar.BatchLoader(dataset, 30, augment=True, generator=torch.Generator().manual_seed(3),
                                        device="cpu")))[0]
    assert torch.equal(augmented, again)


def test_batch_loader_checks_batch_size_and_picks_the_device(cifar_root, monkeypatch):
    dataset = cifar.CIFAR10(cifar_root, train=False)
    with pytest.raises(ValueError, match="batch_size"):
        cifar.BatchLoader(dataset, 0)
    monkeypatch.setattr(cifar.config, "get_device", lambda: torch.device("cpu"))
    assert cifar.BatchLoader(dataset, 4).device == torch.device("cpu")


def test_mirror_acceptance_numbers(mirror):
    assert len(cifar.CIFAR10(train=True)) == 10000 and len(cifar.CIFAR10(train=False)) == 2000
    assert len(cifar.CIFAR10(train=True, classes=["horse"])) == 1000
    assert len(cifar.CIFAR10(train=False, classes=["horse"])) == 200


def test_download_unpacks_the_official_archive_layout(data_root, tmp_path, monkeypatch):
    source = synthetic.write_cifar10(tmp_path / "src", n_per_batch=2, n_test=3)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
    resource = Resource(archive.name, (archive.as_uri(),), "md5:" + hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(cifar, "SPEC", dataclasses.replace(cifar.SPEC, resources=(resource,)))
    assert len(cifar.CIFAR10(train=False, download=True)) == 3
    assert (data_root / "cifar10" / "cifar-10-python.tar.gz").is_file() and len(cifar.CIFAR10()) == 10
