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
