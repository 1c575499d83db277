import re
import struct
import zlib

import numpy as np
import pytest

from coursekit.data import matfile
from coursekit.data.locate import IncompleteDatasetError


def test_read_mat_compressed_and_small_elements(tmp_path):
    arrays = {"trn1": np.array([3, 1, 2]), "a_longer_name": np.arange(6).reshape(2, 3)}
    matfile.write_mat(tmp_path / "x.mat", arrays)
    read = matfile.read_mat(tmp_path / "x.mat")
    assert read["trn1"].tolist() == [[3.0, 1.0, 2.0]] and read["a_longer_name"].tolist() == [[0, 1, 2], [3, 4, 5]]


def _be_element(kind: int, payload: bytes) -> bytes:
    return struct.pack(">II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def test_read_mat_big_endian_uncompressed_uint8(tmp_path):
    matrix = (_be_element(6, struct.pack(">II", 9, 0)) + _be_element(5, struct.pack(">ii", 1, 3))
              + _be_element(1, b"val1x") + _be_element(2, bytes([7, 8, 9])))
    header = b"MATLAB 5.0 MAT-file".ljust(116) + b"\0" * 8 + struct.pack(">H", 0x0100) + b"MI"
    (tmp_path / "be.mat").write_bytes(header + _be_element(14, matrix))
    assert matfile.read_mat(tmp_path / "be.mat")["val1x"].tolist() == [[7, 8, 9]]


def test_read_mat_rejects_other_and_corrupt_files(tmp_path):
    (tmp_path / "v73.mat").write_bytes(b"\x89HDF\r\n" + b"\0" * 200)
    with pytest.raises(ValueError, match="not a MATLAB level-5"):
        matfile.read_mat(tmp_path / "v73.mat")
    header = b"MATLAB 5.0 MAT-file".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    packed = zlib.compress(b"\x0e\0\0\0" * 10)[:-6]
    (tmp_path / "bad.mat").write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)
    with pytest.raises(ValueError, match="corrupt MAT-file"):
        matfile.read_mat(tmp_path / "bad.mat")


def test_write_mat_roundtrip(tmp_path):
    matfile.write_mat(tmp_path / "m.mat", {"ab": np.array([[1.5, 2.0], [3.0, 4.0]]), "vector": np.arange(3)})
    raw = (tmp_path / "m.mat").read_bytes()
    assert raw.startswith(b"MATLAB 5.0 MAT-file") and raw[126:128] == b"IM"
    read = matfile.read_mat(tmp_path / "m.mat")
    assert read["ab"].tolist() == [[1.5, 2.0], [3.0, 4.0]] and read["vector"].tolist() == [[0, 1, 2]]


def _uncompressed(tmp_path):
    """A little-endian MAT-file with one plain (uncompressed) double matrix ``ids`` = [[1, 2, 3]]."""
    def element(kind, payload):
        return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)

    matrix = (element(6, struct.pack("<II", 6, 0)) + element(5, struct.pack("<ii", 1, 3)) + element(1, b"ids")
              + element(9, np.array([1.0, 2.0, 3.0]).tobytes()))
    header = b"MATLAB 5.0 MAT-file".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path = tmp_path / "plain.mat"
    path.write_bytes(header + element(14, matrix))
    assert matfile.read_mat(path)["ids"].tolist() == [[1.0, 2.0, 3.0]]
    return path


def test_a_missing_file_is_the_kits_error(tmp_path):
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(tmp_path / "datasplits.mat"))) as info:
        matfile.read_mat(tmp_path / "datasplits.mat")
    assert "is missing" in str(info.value)


@pytest.mark.parametrize("cut", [1, 4, 8, 20, 40])
def test_a_truncated_file_is_the_kits_error(tmp_path, cut):
    path = _uncompressed(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))):
        matfile.read_mat(path)


def test_a_version_7_3_header_is_refused(tmp_path):
    header = b"MATLAB 7.3 MAT-file, HDF5".ljust(116) + b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM"
    path = tmp_path / "v73.mat"
    path.write_bytes(header.ljust(512, b"\0") + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        matfile.read_mat(path)
    assert "not a MATLAB level-5" in str(info.value)


def test_a_small_element_claiming_more_than_4_bytes_is_refused(tmp_path):
    path = _uncompressed(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[128:136] = struct.pack("<I", 9 | 7 << 16) + b"\0" * 4  # a small element of 7 bytes cannot exist
    path.write_bytes(bytes(raw))
    with pytest.raises(IncompleteDatasetError, match=re.escape(str(path))) as info:
        matfile.read_mat(path)
    assert "claims 7 bytes" in str(info.value)
