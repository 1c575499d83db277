import hashlib
import io
import os
import tarfile
import time
import traceback
from pathlib import Path

import pytest

from coursekit import tempfiles
from coursekit.data import download as dl
from coursekit.data import locate as loc


def _spec(archive: Path | None = None, checksum=None, validate=None) -> loc.DatasetSpec:
    url = archive.as_uri() if archive else "file:///nonexistent/demo.tar.gz"
    return loc.DatasetSpec(name="Demo", folder="demo/inner", required=("a.txt",),
                           resources=(dl.Resource("demo.tar.gz", (url,), checksum),), download_dir="demo",
                           validate=validate)


def _archive(path: Path, files=("inner/a.txt",)) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in files:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


def _write_demo(root: Path) -> None:
    (root / "demo" / "inner").mkdir(parents=True)
    (root / "demo" / "inner" / "a.txt").write_text("synthetic")


def test_find_searches_roots_or_the_given_root(data_root, tmp_path):
    assert loc.find(_spec()) is None
    _write_demo(data_root)
    assert loc.find(_spec()) == data_root.resolve() / "demo" / "inner"
    assert loc.find(_spec(), root=tmp_path) is None
    assert loc.locate(_spec(), root=data_root) == data_root / "demo" / "inner"


def test_locate_downloads_unpacks_and_validates(data_root, tmp_path):
    archive = _archive(tmp_path / "demo.tar.gz")
    checksum = "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()
    seen = []
    folder = loc.locate(_spec(archive, checksum, validate=seen.append), download=True)
    assert folder == data_root.resolve() / "demo" / "inner" and (folder / "a.txt").read_text() == "x"
    assert seen == [folder] and (data_root / "demo" / "demo.tar.gz").is_file()


def test_locate_unpacks_an_archive_put_there_by_hand(data_root, tmp_path, monkeypatch):
    archive = _archive(tmp_path / "demo.tar.gz")
    (data_root / "demo").mkdir()
    (data_root / "demo" / "demo.tar.gz").write_bytes(archive.read_bytes())
    monkeypatch.setattr(dl, "_stream", lambda *a, **k: pytest.fail("must not fetch"))
    assert (loc.locate(_spec(), download=False) / "a.txt").is_file()


def test_locate_without_download_says_what_to_do(data_root):
    with pytest.raises(dl.DatasetNotFoundError, match="download=True") as info:
        loc.locate(_spec(), download=False)
    assert str(data_root / "demo" / "demo.tar.gz") in str(info.value) and "COURSEKIT_DATA" in str(info.value)


def test_locate_offline_is_one_clear_error(data_root):
    with pytest.raises(dl.DatasetNotFoundError, match="file:///nonexistent/demo.tar.gz") as info:
        loc.locate(_spec(), download=True)
    shown = "".join(traceback.format_exception(info.value))
    assert "During handling" not in shown and "direct cause" not in shown and "URLError" not in shown


def test_archive_without_the_expected_files_is_an_error(data_root, tmp_path):
    archive = _archive(tmp_path / "demo.tar.gz", files=("elsewhere/a.txt",))
    with pytest.raises(loc.IncompleteDatasetError, match="after unpacking the downloads in .* lacks a.txt"):
        loc.locate(_spec(archive), download=True)


def test_ensure_synthetic_writes_once_and_atomically(data_root):
    calls = []

    def write(root):
        calls.append(root)
        _write_demo(root)

    folder = loc.ensure_synthetic(_spec(), write)
    assert folder == data_root.resolve() / "synthetic" / "demo" / "inner" and (folder / "a.txt").is_file()
    assert loc.ensure_synthetic(_spec(), write) == folder and len(calls) == 1
    assert [p.name for p in (data_root / "synthetic").iterdir()] == ["demo"]


def test_ensure_synthetic_failure_leaves_nothing(data_root):
    def broken(root):
        (root / "demo").mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loc.ensure_synthetic(_spec(), broken)
    assert list((data_root / "synthetic").iterdir()) == []


def test_ci_profile_uses_synthetic_data_without_downloading(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    monkeypatch.setattr(dl, "_stream", lambda *a, **k: pytest.fail("must not download in ci"))
    folder, synthetic = loc.locate_or_synthetic(_spec(), None, True, _write_demo)
    assert synthetic and (folder / "a.txt").read_text() == "synthetic"
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("NOTE: Demo") and "synthetic" in out[0]


def test_real_data_wins_over_synthetic(data_root, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "ci")
    (data_root / "demo" / "inner").mkdir(parents=True)
    (data_root / "demo" / "inner" / "a.txt").write_text("real")
    folder, synthetic = loc.locate_or_synthetic(_spec(), None, False, _write_demo)
    assert not synthetic and (folder / "a.txt").read_text() == "real" and capsys.readouterr().out == ""


def test_other_profiles_need_opt_in_for_synthetic(data_root, monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "cpu")
    monkeypatch.delenv("COURSEKIT_SYNTHETIC", raising=False)
    with pytest.raises(dl.DatasetNotFoundError):
        loc.locate_or_synthetic(_spec(), None, True, _write_demo)
    monkeypatch.setenv("COURSEKIT_SYNTHETIC", "1")
    assert loc.locate_or_synthetic(_spec(), None, True, _write_demo)[1]


def test_synthetic_root_is_under_the_writable_root(data_root):
    assert loc.synthetic_root() == data_root.resolve() / "synthetic"


def test_spec_is_complete(tmp_path):
    assert not _spec().is_complete(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    assert _spec().is_complete(tmp_path)


def test_read_only_root_is_used_without_writing(tmp_path, monkeypatch):
    read_only, writable = tmp_path / "ro", tmp_path / "rw"
    _write_demo(read_only)
    monkeypatch.setenv("COURSEKIT_DATA", os.pathsep.join([str(read_only), str(writable)]))
    monkeypatch.setenv("COURSEKIT_HOME", str(tmp_path / "home"))
    for path in [read_only, *read_only.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        before = sorted(str(p) for p in read_only.rglob("*"))
        assert loc.locate(_spec(), download=True) == read_only.resolve() / "demo" / "inner"
        assert sorted(str(p) for p in read_only.rglob("*")) == before and not writable.exists()
        assert not (tmp_path / "home").exists()
    finally:
        for path in [read_only, *read_only.rglob("*")]:
            path.chmod(0o755)


def test_find_passes_over_an_incomplete_copy_for_a_complete_one(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _write_demo(first)
    _write_demo(second)
    (first / "demo" / "inner" / "a.txt").write_text("")

    def validate(folder):
        if not (folder / "a.txt").read_text():
            raise loc.IncompleteDatasetError(f"{folder / 'a.txt'} is empty; copy it again.")

    monkeypatch.setenv("COURSEKIT_DATA", os.pathsep.join([str(first), str(second)]))
    assert loc.find(_spec(validate=validate)) == second.resolve() / "demo" / "inner"
    (second / "demo" / "inner" / "a.txt").write_text("")
    with pytest.raises(loc.IncompleteDatasetError, match=f"{first.resolve()}.* is empty; copy it again"):
        loc.find(_spec(validate=validate))


def test_an_unsound_file_put_there_by_hand_is_named_not_asked_for(data_root):
    (data_root / "demo").mkdir()
    (data_root / "demo" / "demo.tar.gz").write_bytes(b"")
    with pytest.raises(dl.DatasetNotFoundError, match="is there but is not a sound copy") as info:
        loc.locate(_spec(checksum="md5:" + "0" * 32), download=False)
    assert "delete it" in str(info.value)


def test_no_writable_root_for_a_missing_dataset_is_not_a_permission_error(data_root, monkeypatch):
    monkeypatch.setattr(loc.config, "writable_root", lambda: (_ for _ in ()).throw(PermissionError("all read-only")))
    with pytest.raises(dl.DatasetNotFoundError, match="Demo is not present in any data root .* none of them can be written to"):
        loc.locate(_spec(), download=True)


def test_staging_folders_of_killed_synthetic_writers_are_removed(data_root):
    stale = loc.synthetic_root() / ".demo.killed.partial"
    (stale / "demo").mkdir(parents=True)
    hours_ago = time.time() - 2 * tempfiles.STALE_AGE
    os.utime(stale, (hours_ago, hours_ago))
    loc.ensure_synthetic(_spec(), _write_demo)
    assert not stale.exists() and [p.name for p in loc.synthetic_root().iterdir()] == ["demo"]


def test_a_damaged_synthetic_stand_in_is_written_again(data_root):
    def validate(folder):
        if (folder / "a.txt").read_text() != "synthetic":
            raise loc.IncompleteDatasetError(f"{folder / 'a.txt'} is damaged")

    folder = loc.ensure_synthetic(_spec(validate=validate), _write_demo)
    (folder / "a.txt").write_text("dam")
    assert loc.ensure_synthetic(_spec(validate=validate), _write_demo) == folder
    assert (folder / "a.txt").read_text() == "synthetic"
