import os
import time

import pytest

from coursekit import tempfiles


def test_remove_stale_takes_only_old_temporaries_of_the_named_target(tmp_path):
    old = time.time() - 2 * tempfiles.STALE_AGE
    names = [".a.zip.x1.part", ".a.zip.x2.part", ".b.zip.x3.part", "a.zip", ".a.zip.x4.tmp"]
    for name in names:
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (old, old))
    os.utime(tmp_path / ".a.zip.x2.part")  # touched just now: a download at work
    (tmp_path / ".a.zip.dir.part").mkdir()
    (tmp_path / ".a.zip.dir.part" / "f").write_text("x")
    os.utime(tmp_path / ".a.zip.dir.part", (old, old))
    assert tempfiles.remove_stale(tmp_path, "a.zip", ".part") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.zip.x2.part", ".a.zip.x4.tmp", ".b.zip.x3.part", "a.zip"]
    assert tempfiles.remove_stale(tmp_path / "missing", "a.zip", ".part") == 0


@pytest.mark.parametrize("names, target, suffix, left", [
    ((".[ab].x.part", ".a.x.part"), "[ab]", ".part", ".a.x.part"),  # glob characters taken literally
    ((".net.pt.k1l3d_0x.tmp", ".net.pt.x.k1l3d_0x.tmp"), "net.pt", ".tmp", ".net.pt.x.k1l3d_0x.tmp"),  # a longer name
])
def test_remove_stale_takes_the_named_targets_temporaries_only(tmp_path, names, target, suffix, left):
    old = time.time() - 2 * tempfiles.STALE_AGE
    for name in names:
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (old, old))
    assert tempfiles.remove_stale(tmp_path, target, suffix) == 1
    assert [p.name for p in tmp_path.iterdir()] == [left]


def test_write_text_creates_the_folder_and_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "notes.txt"
    assert tempfiles.write_text(path, "first\n") == path and path.read_text() == "first\n"
    tempfiles.write_text(path, "säcond\n")
    assert path.read_bytes() == "säcond\n".encode() and os.listdir(path.parent) == ["notes.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.bin"
    tempfiles.write_atomically(path, lambda file: file.write(b"old"))

    def broken(file):
        file.write(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        tempfiles.write_atomically(path, broken)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]


def test_a_write_removes_stale_temporaries_of_its_target(tmp_path):
    stale = tmp_path / ".data.bin.0123abcd.tmp"
    stale.write_bytes(b"killed half-way")
    old = time.time() - 2 * tempfiles.STALE_AGE
    os.utime(stale, (old, old))
    tempfiles.write_text(tmp_path / "data.bin", "x")
    assert os.listdir(tmp_path) == ["data.bin"]
