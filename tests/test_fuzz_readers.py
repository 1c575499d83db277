"""Fuzzing the dataset readers: damaged files end in the kit's own error, never in another exception.

For each format a small valid dataset is written with ``coursekit.data.synthetic``;
one of its files is then truncated at many lengths (0, 1, 9 bytes, ...) and
damaged by seeded random byte flips, and each variant is read through the kit's
loader. A variant must either load with the right shapes and dtypes or raise
``IncompleteDatasetError`` naming the damaged file. Hand-made CIFAR batches that
ask for huge allocations must be refused too.

Everything runs in one child process (this file run as a script) whose address
space is limited to what it uses after its imports plus ``HEADROOM``: an
allocation that the file's size does not justify fails there, and counts as a
failure even when the kit turns the MemoryError into its own error, instead of
taking the machine's memory. A crash of the child fails the tests as well.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from coursekit.data import cifar, flowers, matfile, mnist, synthetic, voc
from coursekit.data.locate import IncompleteDatasetError

resource = pytest.importorskip("resource")  # the address-space limit (Unix only)

HEADROOM = 2 ** 30  # address space the child may add to what its imports took (torch alone maps ~3 GB)
SHORT_PREFIXES = (0, 1, 2, 4, 8, 9, 12, 16, 32, 64)
SPREAD_PREFIXES = 40  # further prefix lengths, evenly spread over the file
FLIPS = 200  # variants with 1-3 bytes changed
EDGE = 256  # half of the flips fall within this many bytes of either end, where headers and trailers are
SEED = 0
MAX_PEAK_GROWTH_MB = 256
MAX_SECONDS = 40


# ------------------------------------------------------------------ the formats: write a dataset, damage one file

def _mnist(root: Path, which: str) -> Path:
    """MNIST with 3 training images; the training ``images-idx3`` or ``labels-idx1`` file."""
    synthetic.write_mnist(root, n_train=3, n_test=2, seed=SEED)
    return root / "mnist" / f"train-{which}-ubyte.gz"


def _cifar(root: Path, protocol: int) -> Path:
    """CIFAR-10 with a test batch of 2 images, pickled again with ``protocol``; that batch file."""
    path = synthetic.write_cifar10(root, n_per_batch=1, n_test=2, seed=SEED) / "test_batch"
    path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes(), encoding="bytes"), protocol=protocol))
    return path


def _voc(root: Path, sub: str, suffix: str) -> Path:
    """VOC with one train and one val image of 32×32; the train image's file in ``sub``."""
    folder = synthetic.write_voc(root, n_train=1, n_val=1, size=32, seed=SEED)
    name = (folder / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    return folder / sub / f"{name}{suffix}"


def _flowers(root: Path, name: str) -> Path:
    """Oxford 17 Flowers with 4 images of 32×32; the file ``name`` of its folder."""
    return synthetic.write_flowers17(root, n=4, size=32, seed=SEED) / name


def _read_mnist(root: Path, path: Path) -> None:
    """Each ``_read_*`` loads its dataset from ``root`` as a user would and asserts what a loaded one holds."""
    images, labels = mnist.load_mnist("train", root=root)
    assert images.dtype == np.float32 and images.shape == (len(labels), 784), images.shape
    assert labels.dtype == np.int64 and labels.ndim == 1 and set(labels.tolist()) <= set(range(10))


def _read_cifar(root: Path, path: Path) -> None:
    dataset = cifar.CIFAR10(root, train=False)
    assert dataset.data.dtype == np.uint8 and dataset.data.shape == (len(dataset.targets), 32, 32, 3)
    assert dataset.targets.dtype == np.int64 and set(dataset.targets.tolist()) <= set(range(10))


def _read_voc(root: Path, path: Path) -> None:
    dataset = voc.VOCSegmentation(root, image_set="train")
    image, target = dataset[0]
    assert image.mode == "RGB" and target.mode == "P" and image.size == target.size
    assert set(np.unique(np.asarray(target)).tolist()) <= set(range(21)) | {255}


def _read_trimap(root: Path, path: Path) -> None:
    image_id = int(path.stem.split("_")[1])
    for split in flowers.SPLITS:
        dataset = flowers.Flowers17(root, split=split)
        if image_id in dataset.ids:
            image, target = dataset[dataset.ids.index(image_id)]
            assert image.mode == "RGB" and target.mode == "L" and image.size == target.size
            assert set(np.unique(np.asarray(target)).tolist()) <= {0, 1, 255}


def _read_splits(root: Path, path: Path) -> None:
    arrays = matfile.read_mat(path)
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) and v.ndim == 2 for k, v in arrays.items())
    ids = flowers.Flowers17(root, split="train").ids
    assert ids and all(isinstance(i, int) for i in ids)


# name -> (write a small dataset under a root and return the file to damage, read it through the loader)
FORMATS = {
    "mnist-images-idx3-gz": (lambda root: _mnist(root, "images-idx3"), _read_mnist),
    "mnist-labels-idx1-gz": (lambda root: _mnist(root, "labels-idx1"), _read_mnist),
    "cifar-batch-pickle-protocol-2": (lambda root: _cifar(root, 2), _read_cifar),
    "cifar-batch-pickle-protocol-5": (lambda root: _cifar(root, 5), _read_cifar),
    "voc-class-map-png": (lambda root: _voc(root, "SegmentationClass", ".png"), _read_voc),
    "voc-photo-jpeg": (lambda root: _voc(root, "JPEGImages", ".jpg"), _read_voc),
    "flowers-trimap-png": (lambda root: _flowers(root, "trimaps/image_0001.png"), _read_trimap),
    "flowers-datasplits-mat": (lambda root: _flowers(root, "datasplits.mat"), _read_splits),
}

_DTYPE_STATE = b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00"  # ..., -1, -1, flags 0 of a pickled dtype's state
_PLAIN = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
_OBJECTS = pickle.dumps(np.array([1, 2], dtype=object), protocol=2)
# Hand-made batch files that ask the unpickler (or NumPy) for far more memory than they hold, or crash it.
CRAFTED = {
    "memo-index-9-bytes": b"\x80\x02Nr\x00\x00\x00\x02.",  # LONG_BINPUT 2**25: a 512 MB memo table
    "memo-index-2-gb": b"\x80\x02Nr\xff\xff\xff\x7f.",
    "binbytes-2-gb": b"\x80\x03B\xff\xff\xff\x7f" + b"x" * 10 + b".",
    "binunicode-2-gb": b"\x80\x03X\xff\xff\xff\x7f" + b"x" * 10 + b".",
    "bytearray8-1-tb": b"\x80\x05\x96" + struct.pack("<Q", 2 ** 40) + b"xx.",
    "frame-1-tb": b"\x80\x04\x95" + struct.pack("<Q", 2 ** 40) + b"N.",
    "ndarray-called-with-a-huge-shape": b"\x80\x02cnumpy\nndarray\nJ\xff\xff\xff\x7f\x85R.",
    "reconstruct-with-a-huge-shape":
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\xff\xff\xff\x7f\x85U\x01b\x87R.",
    "object-array-with-a-short-list": _OBJECTS.replace(b"K\x02\x85", b"J\x40\x42\x0f\x00\x85"),  # segfaulted
    "dtype-flags-set-by-the-pickle": _PLAIN.replace(_DTYPE_STATE, _DTYPE_STATE[:-1] + b"\x3f"),  # SystemError
}


# ------------------------------------------------------------------ the child process

def _variants(raw: bytes, rng: random.Random) -> list[bytes]:
    """Truncated copies of ``raw`` (``SHORT_PREFIXES`` and ``SPREAD_PREFIXES`` lengths), then ``FLIPS`` copies
    with 1-3 bytes XOR-ed with a random non-zero value, half of them within ``EDGE`` bytes of either end."""
    lengths = sorted({n for n in SHORT_PREFIXES if n < len(raw)} | {len(raw) * i // SPREAD_PREFIXES
                                                                  for i in range(SPREAD_PREFIXES)})
    variants = [raw[:n] for n in lengths]
    edge = min(EDGE, len(raw))
    for _ in range(FLIPS):
        damaged = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                pos = rng.randrange(len(raw))
            else:
                pos = rng.randrange(edge) if rng.random() < 0.5 else len(raw) - 1 - rng.randrange(edge)
            damaged[pos] ^= rng.randrange(1, 256)
        variants.append(bytes(damaged))
    return variants


def _outcome(read, root: Path, path: Path) -> str:
    """``"loaded"``, ``"kit_error"`` or a description of anything else that ``read(root, path)`` did."""
    try:
        read(root, path)
    except IncompleteDatasetError as exc:
        if isinstance(exc.__context__, MemoryError):
            return f"MemoryError (turned into the kit's error): {exc}"
        if path.name not in str(exc):
            return f"the kit's error does not name {path.name}: {exc}"
        return "kit_error"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return "loaded"


def _fuzz_format(name: str, workdir: Path) -> dict:
    """Counts of the outcomes of every variant of one format, and the first few that went wrong."""
    write, read = FORMATS[name]
    root = workdir / name
    path = write(root)
    raw = path.read_bytes()
    counts, wrong = {"loaded": 0, "kit_error": 0, "other": 0}, []
    start = time.perf_counter()
    for variant in _variants(raw, random.Random(f"{SEED}:{name}")):
        path.write_bytes(variant)
        outcome = _outcome(read, root, path)
        counts[outcome if outcome in counts else "other"] += 1
        if outcome not in counts and len(wrong) < 10:
            wrong.append(f"{len(variant)} bytes: {outcome}")
    path.write_bytes(raw)
    assert _outcome(read, root, path) == "loaded", f"the undamaged {name} file does not load"
    return {"bytes": len(raw), "variants": sum(counts.values()), **counts, "wrong": wrong,
            "seconds": round(time.perf_counter() - start, 2)}


def _fuzz_all(workdir: Path) -> dict:
    """Every format and every crafted CIFAR batch, with the child's peak memory growth and run time."""
    start, baseline = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {"formats": {name: _fuzz_format(name, workdir) for name in FORMATS}, "crafted": {}}
    batch = workdir / "data_batch_1"
    for name, raw in CRAFTED.items():
        batch.write_bytes(raw)
        results["crafted"][name] = _outcome(lambda root, path: cifar.read_batch(path), workdir, batch)
    results["peak_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) // 1024
    results["seconds"] = round(time.perf_counter() - start, 2)
    return results


def _limit_address_space() -> None:
    """Let this process map at most ``HEADROOM`` more bytes than it has mapped now."""
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + HEADROOM, mapped + HEADROOM))


if __name__ == "__main__":
    _limit_address_space()
    print(json.dumps(_fuzz_all(Path(sys.argv[1]))))


# ------------------------------------------------------------------ the tests

@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> dict:
    """The child's results (see ``_fuzz_all``)."""
    if not Path("/proc/self/statm").is_file():
        pytest.skip("the address-space limit needs Linux's /proc")
    workdir = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "COURSEKIT_HOME": str(workdir), "COURSEKIT_DATA": str(workdir / "no-data-root"),
           "PYTHONWARNINGS": "ignore"}
    child = subprocess.run([sys.executable, __file__, str(workdir)], capture_output=True, text=True, env=env,
                           timeout=300)
    assert child.returncode == 0, (f"the fuzzing child exited with {child.returncode} (negative: killed by a "
                                   f"signal, e.g. a crash in a reader):\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", FORMATS)
def test_damaged_files_load_or_raise_the_kits_error(fuzzed, name):
    result = fuzzed["formats"][name]
    assert result["wrong"] == [] and result["other"] == 0
    assert result["variants"] >= FLIPS + SPREAD_PREFIXES and result["kit_error"] > 0


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_cifar_batches_are_refused_without_the_memory_they_ask_for(fuzzed, name):
    assert fuzzed["crafted"][name] == "kit_error"


def test_fuzzing_stays_small_and_fast(fuzzed):
    assert fuzzed["peak_growth_mb"] < MAX_PEAK_GROWTH_MB and fuzzed["seconds"] < MAX_SECONDS


def test_the_variants_are_reproducible_and_cover_short_prefixes():
    raw = bytes(range(256)) * 4
    first, again = _variants(raw, random.Random(1)), _variants(raw, random.Random(1))
    assert first == again and first[:7] == [b"", raw[:1], raw[:2], raw[:4], raw[:8], raw[:9], raw[:12]]
    assert all(len(v) == len(raw) and v != raw for v in first[-FLIPS:])
