import gzip
import hashlib
import io
import os
import tarfile
import time
import traceback
import zipfile
from pathlib import Path

import pytest

from coursekit import tempfiles
from coursekit.data import download as dl


def _resource(path: Path, checksum=None, name=None) -> dl.Resource:
    return dl.Resource(name or path.name, (path.as_uri(),), checksum)


def _md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_file_digest_and_verify(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"coursekit")
    assert dl.file_digest(path, "sha256") == hashlib.sha256(b"coursekit").hexdigest()
    assert dl.verify(path, _md5(b"coursekit"))
    assert dl.verify(path, "sha256:" + hashlib.sha256(b"coursekit").hexdigest().upper())
    assert not dl.verify(path, _md5(b"other"))
    assert dl.verify(path, None)
    assert not dl.verify(tmp_path / "missing", None)
    (tmp_path / "empty").write_bytes(b"")
    assert not dl.verify(tmp_path / "empty", None)


def test_download_from_file_url_verifies_and_places(tmp_path):
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"x" * 3000)
    target = dl.download(_resource(source, _md5(b"x" * 3000)), tmp_path / "dest", "Demo")
    assert target == tmp_path / "dest" / "data.bin" and target.read_bytes() == b"x" * 3000
    assert not list((tmp_path / "dest").glob("*.part"))


def test_download_reuses_a_valid_file_without_fetching(tmp_path, monkeypatch):
    (tmp_path / "data.bin").write_bytes(b"ok")
    monkeypatch.setattr(dl, "_stream", lambda *a, **k: pytest.fail("must not fetch"))
    assert dl.download(dl.Resource("data.bin", ("file:///nowhere",), _md5(b"ok")), tmp_path, "Demo").is_file()


def test_download_tries_the_next_url(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"abc")
    resource = dl.Resource("data.bin", ("file:///nonexistent/data.bin", source.as_uri()), _md5(b"abc"))
    assert dl.download(resource, tmp_path / "dest", "Demo").read_bytes() == b"abc"


def test_checksum_mismatch_deletes_the_download(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"tampered")
    with pytest.raises(dl.ChecksumError, match="does not match its checksum"):
        dl.download(_resource(source, _md5(b"original")), tmp_path / "dest", "Demo")
    assert list((tmp_path / "dest").iterdir()) == []


def test_interrupted_download_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def interrupted(url, part, desc, timeout, deadline):
        part.write_bytes(b"half of it")
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "_stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dl.download(dl.Resource("big.tar", ("https://example.invalid/big.tar",), None), tmp_path, "Demo")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_gives_one_clear_offline_error(tmp_path):
    resource = dl.Resource("data.bin", ("file:///nonexistent/data.bin",), None)
    with pytest.raises(dl.DatasetNotFoundError) as info:
        dl.download(resource, tmp_path / "dest", "Demo set")
    message = str(info.value)
    assert "Demo set is not present" in message and "file:///nonexistent/data.bin" in message
    assert str(tmp_path / "dest" / "data.bin") in message and "COURSEKIT_DATA" in message
    assert info.value.reason and "During handling" not in "".join(traceback.format_exception(info.value))


def test_offline_error_names_every_file():
    resources = [dl.Resource(f"f{i}.gz", (f"https://example.invalid/f{i}.gz",), None) for i in range(2)]
    error = dl.offline_error("Demo", resources, Path("/data/demo"), "offline")
    assert isinstance(error, dl.DatasetNotFoundError) and error.reason == "offline"
    for i in range(2):
        assert f"https://example.invalid/f{i}.gz" in str(error) and f"/data/demo/f{i}.gz" in str(error)


def _tar(path: Path, members: dict[str, bytes], mode="w:gz", links=()) -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return path


def test_extract_tar_and_zip(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    dest = dl.extract(archive, tmp_path / "out")
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"y"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("top/z.txt", b"z")
    dl.extract(tmp_path / "b.zip", tmp_path / "out")
    assert sorted(p.name for p in (dest / "top").iterdir()) == ["sub", "x.txt", "z.txt"]
    assert [p.name for p in dest.iterdir()] == ["top"]


def test_truncated_archive_is_a_clear_error_and_leaves_nothing(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {f"top/f{i}.bin": os.urandom(20000) for i in range(5)})
    archive.write_bytes(archive.read_bytes()[:60000])
    with pytest.raises(RuntimeError, match="truncated or corrupt") as info:
        dl.extract(archive, tmp_path / "out")
    assert "During handling" not in "".join(traceback.format_exception(info.value))
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_zip_is_a_clear_error(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/data.txt", b"coursekit " * 2000)
    raw = bytearray((tmp_path / "a.zip").read_bytes())
    raw[60:90] = b"\xff" * 30  # inside the compressed member data
    (tmp_path / "a.zip").write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="truncated or corrupt"):
        dl.extract(tmp_path / "a.zip", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("members, links", [
    ({"/etc/evil": b"x"}, ()),
    ({"top/../../evil": b"x"}, ()),
    ({}, [("top/link", "../../outside", tarfile.SYMTYPE)]),
    ({}, [("top/link", "/etc/passwd", tarfile.SYMTYPE)]),
    ({}, [("top/hard", "../outside", tarfile.LNKTYPE)]),
])
def test_tar_path_traversal_is_refused(tmp_path, members, links):
    archive = _tar(tmp_path / "evil.tar", members, mode="w", links=links)
    with pytest.raises(dl.UnsafeArchiveError, match="refusing to extract"):
        dl.extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["/abs/evil.txt", "../evil.txt", "top/../../evil.txt", "C:/evil.txt"])
def test_zip_path_traversal_is_refused(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo(name), b"x")
    with pytest.raises(dl.UnsafeArchiveError):
        dl.extract(tmp_path / "evil.zip", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_symlink_member_is_refused(tmp_path):
    info = zipfile.ZipInfo("top/link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr(info, "../../outside")
    with pytest.raises(dl.UnsafeArchiveError, match="symbolic link"):
        dl.extract(tmp_path / "evil.zip", tmp_path / "out")



def _zip_bytes(tmp_path: Path) -> bytes:
    with zipfile.ZipFile(tmp_path / "made.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/a.txt", b"coursekit " * 2000)
        zf.writestr("top/b.bin", os.urandom(5000))
    return (tmp_path / "made.zip").read_bytes()


@pytest.mark.parametrize("name, make, sound", [
    ("notes.txt", lambda zip_, tar: b"plain", True),
    ("a.zip", lambda zip_, tar: zip_, True),
    ("a.zip", lambda zip_, tar: zip_[:len(zip_) // 2], False),
    ("a.zip", lambda zip_, tar: zip_[:60] + b"\xff" * 30 + zip_[90:], False),
    ("a.zip", lambda zip_, tar: b"\n  <!DOCTYPE html><html><body>Not found</body></html>", False),
    ("a.tar.gz", lambda zip_, tar: tar, True),
    ("a.tar.gz", lambda zip_, tar: tar[:len(tar) - 40], False),
    ("a.tgz", lambda zip_, tar: b"<HTML><p>maintenance</p></HTML>", False),
    ("a.tar", lambda zip_, tar: gzip.decompress(tar)[:1024], False),  # cut after its first member
    ("a.tar", lambda zip_, tar: gzip.decompress(tar), True),
])
def test_verify_without_a_checksum_reads_archives_to_the_end(tmp_path, name, make, sound):
    tar = _tar(tmp_path / "made.tar.gz", {"top/x.bin": b"x" * 512, "top/y.bin": os.urandom(30000)}).read_bytes()
    path = tmp_path / name
    path.write_bytes(make(_zip_bytes(tmp_path), tar))
    assert dl.verify(path, None) is sound


def test_an_unsound_file_without_a_checksum_is_deleted_and_fetched_again(tmp_path, capsys):
    source = tmp_path / "src" / "a.zip"
    source.parent.mkdir()
    source.write_bytes(_zip_bytes(tmp_path))
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "a.zip").write_bytes(b"<html>502 Bad Gateway</html>")
    target = dl.download(_resource(source), tmp_path / "dest", "Demo")
    assert target.read_bytes() == source.read_bytes()
    assert "NOTE:" in capsys.readouterr().out and [p.name for p in (tmp_path / "dest").iterdir()] == ["a.zip"]


def test_stale_part_files_of_killed_downloads_are_removed(tmp_path):
    source = tmp_path / "data.bin"
    source.write_bytes(b"abc")
    dest = tmp_path / "dest"
    dest.mkdir()
    stale, live, other = (dest / ".data.bin.k1ll3d.part", dest / ".data.bin.l1v3.part", dest / ".other.bin.x.part")
    for path in (stale, live, other):
        path.write_bytes(b"half")
    hours_ago = time.time() - 2 * tempfiles.STALE_AGE
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    dl.download(_resource(source, _md5(b"abc")), dest, "Demo")
    assert sorted(p.name for p in dest.iterdir()) == sorted([live.name, other.name, "data.bin"])


@pytest.mark.parametrize("limits", [{"timeout": 0}, {"timeout": -1.0}, {"deadline": 0.0}, {"deadline": float("nan")}])
def test_timeout_and_deadline_must_be_positive(tmp_path, limits):
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        dl.download(dl.Resource("data.bin", ("file:///nowhere",), None), tmp_path, "Demo", **limits)


def test_a_sound_file_another_process_placed_is_used_when_the_move_fails(tmp_path, monkeypatch):
    source = tmp_path / "data.bin"
    source.write_bytes(b"abc")
    dest = tmp_path / "dest"

    def busy(part, target):  # as on Windows, where the other process holds the finished file open
        Path(target).write_bytes(b"abc")
        raise PermissionError(13, "in use", str(target))

    monkeypatch.setattr(os, "replace", busy)
    assert dl.download(_resource(source, _md5(b"abc")), dest, "Demo").read_bytes() == b"abc"
    assert [p.name for p in dest.iterdir()] == ["data.bin"]


def test_a_device_file_in_a_tar_is_refused_by_name(tmp_path):
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("data/null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(info)
    with pytest.raises(dl.UnsafeArchiveError, match="'data/null' is a device file or pipe"):
        dl.extract(archive, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_a_name_too_long_for_any_file_system_is_named_not_called_corrupt(tmp_path):
    archive = _tar(tmp_path / "long.tar.gz", {"data/" + "x" * 300 + ".txt": b"1"})
    with pytest.raises(RuntimeError, match="longer than any common file system allows") as info:
        dl.extract(archive, tmp_path / "out")
    assert "corrupt" not in str(info.value) and [p.name for p in (tmp_path / "out").iterdir()] == []


def test_something_in_the_way_of_a_member_is_named(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"data/inner/a.txt": b"1"})
    (tmp_path / "out" / "data").mkdir(parents=True)
    (tmp_path / "out" / "data" / "inner").write_text("a file where the archive has a folder")
    with pytest.raises(RuntimeError, match=r"out/data/inner is a file where the archive has a folder; move it away"):
        dl.extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "data" / "inner").read_text().startswith("a file")


def test_a_full_disk_while_unpacking_says_so(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/a.txt", "1")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "data/a.txt")

    monkeypatch.setattr(dl.shutil, "copyfileobj", full)
    with pytest.raises(RuntimeError, match="No space left on device .* free space") as info:
        dl.extract(archive, tmp_path / "out")
    assert "corrupt" not in str(info.value)


def test_staging_folders_of_killed_extractions_are_removed(tmp_path):
    out = tmp_path / "out"
    stale, fresh = out / ".a.tar.gz.old.partial", out / ".a.tar.gz.new.partial"
    for folder in (stale, fresh):
        (folder / "data").mkdir(parents=True)
    hours_ago = time.time() - 2 * tempfiles.STALE_AGE
    os.utime(stale, (hours_ago, hours_ago))
    dl.extract(_tar(tmp_path / "a.tar.gz", {"data/a.txt": b"1"}), out)
    assert not stale.exists() and fresh.is_dir() and (out / "data" / "a.txt").read_bytes() == b"1"
