import dataclasses
import hashlib
import os
import pickle
import re
import sys
import tarfile
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from coursekit.data import cifar, synthetic
from coursekit.data.download import Resource
from coursekit.data.locate import IncompleteDatasetError, find


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
        pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}, f, protocol=2)
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


def test_the_kits_error_is_also_a_value_error(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        cifar.read_batch(path)
    assert isinstance(info.value, ValueError)  # what callers caught before


@pytest.mark.parametrize("raw", [
    # Defect 3: 9 bytes (PROTO 2, NONE, LONG_BINPUT 2**25, STOP) made the unpickler allocate a 512 MB memo table.
    b"\x80\x02Nr\x00\x00\x00\x02.",
    b"\x80\x03B\xff\xff\xff\x7f" + b"x" * 10 + b".",  # BINBYTES of 2 GB, 10 bytes there
], ids=["huge-memo-index", "length-beyond-the-file"])
def test_what_the_file_cannot_hold_is_refused_before_it_is_allocated(tmp_path, raw):
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw)
    tracemalloc.start()
    try:
        with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
            cifar.read_batch(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2 ** 20


@pytest.mark.parametrize("raw", [
    b"\x80\x02N}b.",  # BUILD on None: AttributeError
    b"\x80\x02]K\x00K\x01s.",  # SETITEM on a list: IndexError
    b"\x80\x02h\x05.",  # BINGET of an index never stored
    b"\x80\x03X\x02\x00\x00\x00\xff\xfe.",  # BINUNICODE that is not UTF-8
    b"",
    b"\x80",
], ids=["attribute-error", "index-error", "memo-miss", "unicode", "empty", "one-byte"])
def test_every_unpickling_error_becomes_the_kits_error(tmp_path, raw):
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        cifar.read_batch(path)


def test_damaged_dtype_flags_do_not_reach_numpy(tmp_path):
    # One flipped byte (the dtype state's flags) made NumPy raise SystemError; with an object-array
    # state it crashes the interpreter, so arrays must be plain numbers before NumPy sees them.
    raw = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    flags = raw.index(b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00") + 11
    path = tmp_path / "test_batch"
    path.write_bytes(raw[:flags] + b"\x3f" + raw[flags + 1:])
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        cifar.read_batch(path)


def _write_test_batch(folder, batch):
    """Replace ``folder``'s test batch by ``batch`` (pickle protocol 2, as the official files); returns its path."""
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return folder / "test_batch"


@pytest.mark.parametrize("batch, message", [
    ({b"labels": [0, 1], b"filenames": [bytes(4000)]}, "no data array"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "no list of labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 1 is 10"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 0]}, "label 0 is -1"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, "cat"]}, "label 1 is a str"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}, "int64"),
], ids=["no-data", "no-labels", "label-10", "label-minus-1", "label-str", "count", "dtype"])
def test_bad_batch_contents_are_errors_naming_the_file(tmp_path, batch, message):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    path = _write_test_batch(folder, batch)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        cifar.CIFAR10(tmp_path, train=False)
    assert message in str(info.value)


def test_labels_may_be_an_integer_array(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    _write_test_batch(folder, {b"data": np.zeros((3, 3072), np.uint8), b"labels": np.array([4, 0, 9], np.uint8)})
    assert cifar.CIFAR10(tmp_path, train=False).targets.tolist() == [4, 0, 9]


def test_batches_pickled_with_protocol_5_load(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=3)
    expected = cifar.CIFAR10(tmp_path, train=False)
    batch = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=5))
    again = cifar.CIFAR10(tmp_path, train=False)
    assert np.array_equal(again.data, expected.data) and np.array_equal(again.targets, expected.targets)


@pytest.mark.parametrize("damage", [lambda raw: b"", lambda raw: raw[:5000], lambda raw: raw[:-1]],
                         ids=["zero-bytes", "too-small", "truncated"])
def test_validate_catches_empty_and_truncated_batches(tmp_path, damage):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    cifar.SPEC.validate(folder)
    path = folder / "data_batch_4"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        cifar.SPEC.validate(folder)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        find(cifar.SPEC, tmp_path)


def test_read_all_reads_every_batch_and_the_meta_file(tmp_path):
    folder = synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    cifar.SPEC.read_all(folder)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 42]}, f, protocol=2)
    cifar.SPEC.validate(folder)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder / "data_batch_3"))):
        cifar.SPEC.read_all(folder)
    synthetic.write_cifar10(tmp_path, n_per_batch=2, n_test=2)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat"]}))
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(folder / "batches.meta"))):
        cifar.SPEC.read_all(folder)


def test_mirror_passes_validate_and_read_all(mirror):
    folder = mirror / cifar.SPEC.folder
    cifar.SPEC.validate(folder)
    cifar.SPEC.read_all(folder)
