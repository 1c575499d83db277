"""MATLAB level-5 MAT-files: read and write numeric matrices, without SciPy.

Enough of the format for ``datasplits.mat`` of Oxford 17 Flowers: a 128-byte
header, then data elements (8-byte tag + payload padded to 8 bytes, or the
"small" form that packs up to 4 bytes into the tag), matrices (``miMATRIX``:
array flags, dimensions, name, real part in column-major order) and
zlib-compressed elements (``miCOMPRESSED``, what MATLAB writes by default).
Version 7.3 files are HDF5 and not supported.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .files import DatasetFileError, read_bytes

# Data element types (mi*) and the NumPy types of the numeric ones.
MI_INT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 9, 14, 15
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# Array classes (mx*): double, single and the integer classes are numeric.
MX_DOUBLE = 6
_NUMERIC_CLASSES = range(6, 16)
VERSION_5 = 0x0100  # the header's version field in level-5 files (v7.3 HDF5 files have 0x0200)
_FIX = "delete it and download it again"


def _elements(buf: bytes, pos: int, order: str):
    """Yield ``(type, payload)`` of the data elements in ``buf`` from ``pos``.

    Raises:
        ValueError: an element runs past the end of ``buf``, or a partial tag is left over (a truncated file).
    """
    while pos + 8 <= len(buf):
        (tag,) = struct.unpack_from(order + "I", buf, pos)
        if tag >> 16:  # small element: size in the upper half of the tag, data in the next 4 bytes
            if tag >> 16 > 4:
                raise ValueError(f"the small element at byte {pos} claims {tag >> 16} bytes, at most 4 fit")
            yield tag & 0xFFFF, buf[pos + 4:pos + 4 + (tag >> 16)]
            pos += 8
            continue
        (nbytes,) = struct.unpack_from(order + "I", buf, pos + 4)
        if pos + 8 + nbytes > len(buf):
            raise ValueError(f"the element at byte {pos} needs {nbytes} bytes, only {len(buf) - pos - 8} follow")
        yield tag, buf[pos + 8:pos + 8 + nbytes]
        pos += 8 + nbytes + (0 if tag == MI_COMPRESSED else -nbytes % 8)
    if 0 < len(buf) - pos < 8:
        raise ValueError(f"{len(buf) - pos} stray bytes at the end, less than an element tag")


def _matrix(payload: bytes, order: str) -> tuple[str, np.ndarray] | None:
    """``(name, array)`` of one numeric miMATRIX element, else ``None``."""
    parts = list(_elements(payload, 0, order))
    if len(parts) < 4:
        return None
    (_, flags), (_, dims), (_, name), (real_type, real) = parts[:4]
    if struct.unpack_from(order + "I", flags)[0] & 0xFF not in _NUMERIC_CLASSES or real_type not in _MI_DTYPES:
        return None
    shape = tuple(np.frombuffer(dims, dtype=order + "i4"))
    values = np.frombuffer(real, dtype=order + _MI_DTYPES[real_type])
    return name.decode("latin1"), values.reshape(shape, order="F")


def read_mat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The numeric arrays of a MATLAB level-5 MAT-file (what ``datasplits.mat`` holds).

    A small reader, so that SciPy is not needed: plain and compressed
    elements, either byte order; cells, structs and strings are skipped.

    Returns:
        name -> array with the stored shape (as stored: float64 for MATLAB doubles).

    Raises:
        DatasetFileError: missing, not a level-5 MAT-file (e.g. a v7.3 HDF5 file) or a corrupt one.
    """
    raw = read_bytes(path, _FIX)
    order = {b"IM": "<", b"MI": ">"}.get(raw[126:128])
    if len(raw) < 128 or order is None or struct.unpack_from(order + "H", raw, 124)[0] != VERSION_5:
        raise DatasetFileError(f"{path} is not a MATLAB level-5 MAT-file; {_FIX}.")
    arrays: dict[str, np.ndarray] = {}
    try:
        for kind, payload in _elements(raw, 128, order):
            if kind == MI_COMPRESSED:
                kind, payload = next(_elements(zlib.decompress(payload), 0, order))
            entry = _matrix(payload, order) if kind == MI_MATRIX else None
            if entry is not None:
                arrays[entry[0]] = entry[1]
    except (zlib.error, struct.error, ValueError, StopIteration) as exc:
        raise DatasetFileError(f"{path} is a corrupt MAT-file ({exc}); {_FIX}.") from None
    return arrays


def _element(kind: int, payload: bytes) -> bytes:
    """One level-5 MAT data element (little endian); payloads of up to 4 bytes use the small format."""
    if len(payload) <= 4:
        return struct.pack("<I", kind | len(payload) << 16) + payload.ljust(4, b"\0")
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def write_mat(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """A MATLAB level-5 MAT-file of double matrices, each variable compressed (as MATLAB saves them)."""
    header = b"MATLAB 5.0 MAT-file, written by coursekit".ljust(116) + b"\0" * 8 + struct.pack("<H", VERSION_5) + b"IM"
    body = []
    for name, array in arrays.items():
        array = np.atleast_2d(np.asarray(array, dtype="<f8"))
        matrix = (_element(MI_UINT32, struct.pack("<II", MX_DOUBLE, 0))  # array flags
                  + _element(MI_INT32, struct.pack(f"<{array.ndim}i", *array.shape))
                  + _element(MI_INT8, name.encode("ascii"))
                  + _element(MI_DOUBLE, array.tobytes(order="F")))
        packed = zlib.compress(_element(MI_MATRIX, matrix))
        body.append(struct.pack("<II", MI_COMPRESSED, len(packed)) + packed)
    Path(path).write_bytes(header + b"".join(body))
