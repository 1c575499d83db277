"""Reading a dataset's files: one error for a broken file, and images opened through it.

Every reader turns a missing, truncated or malformed file into one
``DatasetFileError`` that names the file and what to do, instead of
whatever the decoder raised (``FileNotFoundError``, PIL's
``UnidentifiedImageError``, ``OSError: image file is truncated``, ...).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from .locate import IncompleteDatasetError


class DatasetFileError(IncompleteDatasetError, ValueError):
    """A dataset file is missing, unreadable or holds what its format does not allow.

    The message names the file and what to do. It is an ``IncompleteDatasetError``
    (``locate`` passes over a folder whose cheap check finds one) and a
    ``ValueError`` (what the readers raised for unreadable files before).
    """


def unreadable(path: str | os.PathLike, exc: OSError, fix: str) -> DatasetFileError:
    """The error for ``path`` that could not be opened or read (``exc``); ``fix`` says what to do."""
    if isinstance(exc, FileNotFoundError):
        return DatasetFileError(f"{path} is missing; {fix}.")
    return DatasetFileError(f"{path} cannot be read ({exc.strerror or exc}); {fix}.")


def read_bytes(path: str | os.PathLike, fix: str) -> bytes:
    """The contents of ``path``.

    Raises:
        DatasetFileError: it is missing or cannot be read; the message ends with ``fix``.
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise unreadable(path, exc, fix) from None


def open_image(path: str | os.PathLike, fmt: str, fix: str) -> Image.Image:
    """The image stored at ``path``, decoded in full.

    PIL decodes it from the file's bytes in memory: reading from a file, a
    damaged chunk length makes it allocate that many bytes up front.

    Args:
        path: the image file.
        fmt: the PIL format it must have, ``"JPEG"`` or ``"PNG"``; other formats are not tried,
            so a damaged header cannot make PIL read the file as something else.
        fix: what to do, ending the error message.

    Returns:
        The PIL image with the mode and size stored in the file.

    Raises:
        DatasetFileError: the file is missing, not a ``fmt`` file, truncated or corrupt.
    """
    data = read_bytes(path, fix)
    try:
        with Image.open(io.BytesIO(data), formats=(fmt,)) as image:
            image.load()
    except Exception as exc:  # PIL's decoders raise many types (SyntaxError, struct.error, ...) for corrupt data
        raise DatasetFileError(f"{path} is not a readable {fmt} image ({type(exc).__name__}: {exc}); "
                               f"{fix}.") from None
    return image
