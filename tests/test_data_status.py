import dataclasses
import hashlib
import os
import urllib.error

import pytest

from coursekit import cli
from coursekit.data import DATASETS, Row, download, format_table, mnist, prepare_all, status, synthetic
from coursekit.data.locate import DatasetSpec, IncompleteDatasetError


@pytest.fixture
def cpu_profile(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    monkeypatch.delenv("COURSEKIT_SYNTHETIC", raising=False)


@pytest.fixture
def offline(monkeypatch):
    def unreachable(url, part, desc, timeout, deadline):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(download, "_stream", unreachable)


@pytest.fixture
def mirror_root(data_root, tmp_path, monkeypatch, facade_counts):
    """A second data root, searched first, that carries a SHA256SUMS manifest like the offline mirror
    (``_with_sums`` fills it with small kit-written sets; their 2 CMP photos count as complete)."""
    facade_counts(2)
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("COURSEKIT_DATA", os.pathsep.join([str(root), str(data_root)]))
    return root


def _with_sums(root):
    synthetic.write_mnist(root, n_train=10, n_test=10)
    synthetic.write_cifar10(root, n_per_batch=2, n_test=2)
    synthetic.write_cmp_facade(root, n_base=2)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*")) if p.is_file()]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def test_registry_has_the_five_datasets():
    assert [e.key for e in DATASETS] == ["mnist", "cifar10", "cmp_facade", "cmp_facade/extended", "voc", "flowers17"]
    assert [e.key for e in DATASETS if e.write_synthetic] == ["voc", "flowers17"]


def test_everything_missing_says_what_to_do(data_root, cpu_profile):
    rows = prepare_all(download=False)
    assert all(r.where == "missing" and r.status.startswith("missing: not downloaded") for r in rows)
    assert [r.ok for r in rows] == [False, False, False, True, False, False]
    voc_row = rows[4]
    assert "VOCtrainval_11-May-2012.tar" in voc_row.status and str(data_root / "voc") in voc_row.status
    assert "COURSEKIT_SYNTHETIC=1" in voc_row.status and "COURSEKIT_DATA" in voc_row.status


def test_failed_downloads_are_reported_not_raised(data_root, cpu_profile, offline):
    rows = prepare_all(download=True)
    assert all(r.status.startswith("missing: could not download") for r in rows)


def test_mirror_sums_are_verified(mirror_root, cpu_profile):
    _with_sums(mirror_root)
    rows = {r.dataset: r for r in prepare_all(download=False)}
    for key, files in (("mnist", 4), ("cifar10", 7), ("cmp_facade", 6)):
        assert rows[key].status == "verified (mirror SHA256SUMS)" and rows[key].ok and rows[key].files == files
    assert rows["mnist"].where == str(mirror_root.resolve() / "mnist")


def test_a_changed_file_fails_verification(mirror_root, cpu_profile, tmp_path):
    _with_sums(mirror_root)
    other = synthetic.write_cifar10(tmp_path / "other", n_per_batch=2, n_test=2, seed=1)
    batches = mirror_root / "cifar10" / "cifar-10-batches-py"
    (batches / "test_batch").write_bytes((other / "test_batch").read_bytes())
    (mirror_root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    rows = {r.dataset: r for r in prepare_all(download=False)}
    assert rows["cifar10"].status.startswith("checksum mismatch: 1 of 7 files") and not rows["cifar10"].ok
    assert rows["mnist"].status.startswith("missing") and rows["cmp_facade"].ok
    (batches / "test_batch").write_bytes(b"changed")  # a copy cut short: incomplete before any checksum
    row = status.prepare(DATASETS[1], download=False)
    assert row.status.startswith("incomplete: ") and "test_batch" in row.status and not row.ok


def test_verify_against_sums_without_a_listing(data_root):
    folder = synthetic.write_mnist(data_root, n_train=2, n_test=2)
    assert status.verify_against_sums(mnist.SPEC, folder) is None
    (data_root / "SHA256SUMS").write_text("00  cifar10/other\n")
    assert status.verify_against_sums(mnist.SPEC, folder) is None
    assert status.prepare(DATASETS[0], download=False).status == "ok"


def test_ci_profile_stands_in_for_voc_and_flowers(data_root, monkeypatch, offline, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setattr("coursekit.data.voc.SYNTHETIC_TRAIN", 2)
    monkeypatch.setattr("coursekit.data.voc.SYNTHETIC_VAL", 1)
    monkeypatch.setattr("coursekit.data.flowers.SYNTHETIC_COUNT", 4)
    rows = {r.dataset: r for r in prepare_all(download=True)}
    for key in ("voc", "flowers17"):
        assert rows[key].status.startswith("synthetic") and rows[key].ok and rows[key].files > 0
    assert rows["mnist"].status.startswith("missing: could not download")
    assert capsys.readouterr().out.count("NOTE:") == 2


def test_prepare_reports_a_fresh_download(data_root, tmp_path, cpu_profile):
    source = synthetic.write_mnist(tmp_path / "src", n_train=3, n_test=3)
    resources = tuple(download.Resource(r.filename, ((source / r.filename).as_uri(),),
                                        "md5:" + hashlib.md5((source / r.filename).read_bytes()).hexdigest())
                      for r in mnist.RESOURCES)
    entry = status.Entry("mnist", dataclasses.replace(mnist.SPEC, resources=resources))
    row = status.prepare(entry, download=True)
    assert row.status == "downloaded (checksums verified)" and row.files == 4 and row.ok
    bad = dataclasses.replace(resources[0], filename="train-images-idx3-ubyte.gz", checksum="md5:" + "0" * 32)
    (data_root / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    broken = status.Entry("mnist", dataclasses.replace(mnist.SPEC, resources=(bad,) + resources[1:]))
    row = status.prepare(broken, download=True)
    assert row.status.startswith("failed:") and "checksum" in row.status and not row.ok


def test_count_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x", "a/y", "a/b/z"):
        (tmp_path / name).write_text("1")
    assert status.count_files(tmp_path) == 3


def test_format_table():
    rows = [Row("mnist", "/data/mnist", 4, "ok", True), Row("voc", "missing", 0, "missing: fetch it", False)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["dataset", "where", "found", "files", "status"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["mnist", "/data/mnist", "4", "ok"]
    assert lines[3].split()[:3] == ["voc", "missing", "-"] and lines[3].endswith("missing: fetch it")
    assert lines[2].index("ok") == lines[3].index("missing: fetch")


def test_mirror_status(mirror, cpu_profile):
    rows = {r.dataset: r for r in prepare_all(download=False)}
    assert rows["mnist"].status == rows["cifar10"].status == rows["cmp_facade"].status == "verified (mirror SHA256SUMS)"
    assert rows["cmp_facade"].files == 3 * 378


def test_an_incomplete_copy_is_reported_and_not_ok(data_root, cpu_profile, facade_counts):
    facade_counts(378)
    synthetic.write_cmp_facade(data_root, n_base=20)  # a half-finished copy: 60 of the 1,134 files
    row = status.prepare(DATASETS[2], download=False)
    assert row.where == "incomplete" and not row.ok
    assert row.status.startswith("incomplete: ") and "holds 20 cmp_bNNNN photo/label pairs" in row.status
    assert "\n" not in row.status


def test_an_unreadable_file_is_reported_and_not_ok(data_root, cpu_profile):
    def read_all(folder):
        raise IncompleteDatasetError(f"{folder / 'a.txt'} is not readable; copy it again.")

    spec = DatasetSpec(name="Demo", folder="demo", required=("a.txt",), resources=(), download_dir="demo",
                       read_all=read_all)
    (data_root / "demo").mkdir()
    (data_root / "demo" / "a.txt").write_text("x")
    row = status.prepare(status.Entry("demo", spec), download=False)
    assert row.status == f"unreadable: {data_root.resolve() / 'demo' / 'a.txt'} is not readable; copy it again."
    assert not row.ok and row.files == 1


def test_the_command_exits_1_on_a_checksum_mismatch_even_without_downloads(mirror_root, cpu_profile, capsys):
    _with_sums(mirror_root)
    assert cli.main(["data", "--no-download", "mnist"]) == 0
    synthetic.write_mnist(mirror_root, n_train=10, n_test=10, seed=1)  # sound files, other contents
    assert cli.main(["data", "--no-download", "mnist"]) == 1
    assert "checksum mismatch" in capsys.readouterr().out


def test_a_copy_passed_over_for_a_complete_one_is_named(data_root, tmp_path, cpu_profile, facade_counts, monkeypatch):
    facade_counts(3)
    half = tmp_path / "half"
    synthetic.write_cmp_facade(half, n_base=2)
    synthetic.write_cmp_facade(data_root, n_base=3)
    monkeypatch.setenv("COURSEKIT_DATA", os.pathsep.join([str(half), str(data_root)]))
    row = status.prepare(DATASETS[2], download=False)
    assert row.ok and row.where == str(data_root.resolve() / "cmp_facade" / "base")
    assert row.status.startswith("ok; passed over ") and "holds 2 cmp_bNNNN photo/label pairs" in row.status
