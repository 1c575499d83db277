import hashlib
import io
import os
import tarfile
import traceback
import zipfile
from pathlib import Path

import pytest

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
    def interrupted(url, part, desc, timeout):
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


def test_find_in_roots_returns_the_first_complete_folder(tmp_path, monkeypatch):
    first, second = tmp_path / "one", tmp_path / "two"
    (first / "ds").mkdir(parents=True)
    (second / "ds").mkdir(parents=True)
    (second / "ds" / "needed.txt").write_text("x")
    monkeypatch.setenv("COURSEKIT_DATA", os.pathsep.join([str(first), str(second)]))
    assert dl.find_in_roots("ds", ("needed.txt",)) == second.resolve() / "ds"
    assert dl.find_in_roots("ds", ("other.txt",)) is None
