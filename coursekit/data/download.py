"""Fetch, verify and extract dataset files, safely.

Every download streams into a private temporary file next to the target
(``.<name>.<random>.part``, so concurrent downloads never share one) and
gets its final name only once it is sound: as long as its
``Content-Length`` said, and matching its published checksum or, where
there is none, not an HTML page and, for an archive, readable to its end.
A file that fails is deleted and the next URL is tried, so a truncated
download or an HTML error page never looks complete; network failures of
every kind end in the kit's own errors. Archives are extracted member by member after refusing absolute
paths, ``..`` components and links that leave the target folder.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .. import tempfiles

CHUNK = 1 << 20
ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip")  # the names verify() reads as archives
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError)


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither present under a data root nor downloadable; ``reason`` says why a fetch failed."""

    reason = ""


class ChecksumError(RuntimeError):
    """A file's checksum does not match the expected one."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the extraction folder, or is a link or device file."""


class _UnpackableMember(Exception):
    """An archive member that no common file system can hold (a name part over ``NAME_MAX`` bytes)."""


NAME_MAX = 255  # bytes in one path component on ext4, APFS, NTFS


class _TransferError(Exception):
    """A transfer that did not deliver the whole file: a short body, a bad header, the deadline passed."""


# What one transfer can raise: socket, TLS, timeout and URL errors (OSError), protocol errors such as
# IncompleteRead and BadStatusLine (HTTPException), malformed URLs (ValueError), and _TransferError.
_TRANSFER_ERRORS = (OSError, http.client.HTTPException, ValueError, _TransferError)


@dataclass(frozen=True)
class Resource:
    """One downloadable file.

    Attributes:
        filename: the name it is saved under.
        urls: where to fetch it, tried in order (official host first, then mirrors).
        checksum: ``"<algorithm>:<hexdigest>"``, e.g. ``"md5:c58f..."``; ``None`` when no published checksum exists.
    """

    filename: str
    urls: tuple[str, ...]
    checksum: str | None


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, checksum: str | None) -> bool:
    """True when ``path`` is a sound copy of its file.

    With a ``checksum`` (``"md5:..."``/``"sha256:..."``) it must match. Without
    one the file must be non-empty and not an HTML page, and an archive
    (``.zip``, ``.tar``, ``.tgz``, ``.tar.gz``) must read to its end.
    """
    path = Path(path)
    return _defect(path, checksum, path.name) is None


def _defect(path: Path, checksum: str | None, name: str) -> str | None:
    """Why ``path`` is not a sound copy of the file called ``name`` (see ``verify``), or ``None`` when it is."""
    if not path.is_file():
        return "it is missing"
    if checksum is not None:
        algorithm, _, expected = checksum.partition(":")
        actual = file_digest(path, algorithm)
        if actual == expected.lower():
            return None
        if _is_html(path):
            return "the server sent a web page (HTML) instead of the file"
        return f"it does not match its checksum (its {algorithm} is {actual})"
    if path.stat().st_size == 0:
        return "it is empty"
    if _is_html(path):
        return "the server sent a web page (HTML) instead of the file"
    if name.lower().endswith(ARCHIVE_SUFFIXES):
        return _archive_defect(path, name)
    return None


def _is_html(path: Path) -> bool:
    """Whether the file starts, after white space, with ``<!DOCTYPE`` or ``<html`` (any case)."""
    with open(path, "rb") as f:
        head = f.read(1024).lstrip().lower()
    return head.startswith((b"<!doctype", b"<html"))


def _archive_defect(path: Path, name: str) -> str | None:
    """Why the archive ``path`` (a zip or tar by ``name``) does not read to its end, or ``None``.

    Every zip member's CRC is checked; a tar is walked member by member to
    its end-of-archive marker and a compressed one to the end of its stream,
    where gzip, bzip2 and xz check their own CRC.
    """
    try:
        if name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            return None if bad is None else f"it is corrupt (member {bad} fails its CRC)"
        with tarfile.open(path) as tar:
            for _ in tar:  # each step reads (or seeks, decompressing) past the previous member's data
                pass
            tar.fileobj.seek(tar.offset)
            end = tar.fileobj.read(tarfile.BLOCKSIZE)
            while tar.fileobj.read(CHUNK):
                pass
    except _ARCHIVE_ERRORS as exc:
        return f"it is truncated or corrupt ({exc})"
    # tarfile takes a file cut off at a member boundary, or garbage there, for the end of the archive.
    if end != bytes(tarfile.BLOCKSIZE):
        return "it is truncated or corrupt (no end-of-archive marker after its last complete member)"
    return None


def _stream(url: str, part: Path, desc: str, timeout: float, deadline: float = math.inf) -> None:
    """Write the body at ``url`` into ``part``, showing progress as ``desc``.

    Each network operation (connect, every read) may wait ``timeout``
    seconds; the whole transfer is abandoned at the first read after
    ``deadline`` seconds.

    Raises:
        _TransferError: the body is shorter than its ``Content-Length``, that header is not a number,
            or the deadline passed.
        OSError, http.client.HTTPException, ValueError: the connection or the reply failed.
    """
    ends = time.monotonic() + deadline
    request = urllib.request.Request(url, headers={"User-Agent": "coursekit"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        expected = _content_length(response)
        received = 0
        with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
            # read1 returns what has arrived; read(CHUNK) would wait for a whole MiB, past any deadline.
            for chunk in iter(lambda: response.read1(CHUNK), b""):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() > ends:
                    raise _TransferError(f"it had not arrived after the {deadline:g} s deadline "
                                         f"({received} bytes received)")
    if expected is not None and received != expected:
        raise _TransferError(f"the connection ended after {received} of the {expected} bytes announced")


def _content_length(response) -> int | None:
    """The body length announced by ``response``'s ``Content-Length``, ``None`` when there is none.

    Raises:
        _TransferError: the header is not a whole number.
    """
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    if not (value.strip().isascii() and value.strip().isdigit()):
        raise _TransferError(f"the server sent an invalid Content-Length {value!r}")
    return int(value)


def _describe(exc: BaseException, timeout: float) -> str:
    """Why one transfer failed, in a few plain words for a message."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return _describe(exc.reason, timeout) if isinstance(exc.reason, BaseException) else str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"nothing arrived for {timeout:g} s (timed out)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without replying"
    if isinstance(exc, http.client.BadStatusLine):
        return f"the server did not reply with HTTP (it sent {exc.line!r})"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection ended in the middle of the file"
    return str(exc) or type(exc).__name__


def _receive(url: str, part: Path, desc: str, timeout: float, deadline: float) -> str | None:
    """Stream ``url`` into ``part`` within ``deadline`` seconds; why that failed, or ``None``."""
    try:
        _stream(url, part, desc, timeout, deadline)
    except _TRANSFER_ERRORS as exc:
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # it holds the error page's open response
        return _describe(exc, timeout)
    return None


def download(resource: Resource, folder: str | os.PathLike, dataset: str, timeout: float = 30.0, *,
             deadline: float = 3600.0) -> Path:
    """Download ``resource`` into ``folder`` and verify it; return the file's path.

    A sound file already there (see ``verify``) is reused; an unsound one is
    deleted, with a ``NOTE``, and fetched again. Each URL is tried in turn:
    its bytes go to a private ``.<filename>.<random>.part`` file that gets
    the final name only once it is sound, and is deleted otherwise.
    Temporary files that killed downloads left (unwritten for
    ``tempfiles.STALE_AGE`` seconds) are removed.

    Args:
        resource: the file, its URLs and checksum.
        folder: where it goes.
        dataset: the dataset's name, for messages.
        timeout: seconds each network operation (connect, every read) may wait.
        deadline: seconds one URL may take to deliver the whole file (it is abandoned at the first read
            after that, so within ``deadline + timeout``).

    Raises:
        ValueError: ``timeout`` or ``deadline`` is not a positive number.
        ChecksumError: no URL gave a sound file, and one gave a file that fails its checksum (all were deleted).
        DatasetNotFoundError: no URL gave a sound file; names each URL, what went wrong and what to do.
    """
    _check_seconds("timeout", timeout)
    _check_seconds("deadline", deadline)
    folder = Path(folder)
    target = folder / resource.filename
    if _reusable(target, resource, dataset):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tempfiles.remove_stale(folder, resource.filename, ".part")
    failures, wrong_checksum = [], False
    for url in resource.urls:
        part = _new_part(folder, resource.filename)
        try:
            problem = _receive(url, part, resource.filename, timeout, deadline)
            delivered = problem is None
            problem = problem or _defect(part, resource.checksum, resource.filename)
            if problem is None:
                return _place(part, target, resource.checksum)
        finally:
            part.unlink(missing_ok=True)
        failures.append(f"{url}: {problem}" + (", so the download was deleted" if delivered else ""))
        wrong_checksum = wrong_checksum or (delivered and resource.checksum is not None)
    if wrong_checksum:
        raise ChecksumError(
            f"{dataset}: no download of {resource.filename} matches its checksum {resource.checksum} "
            f"({'; '.join(failures)}). Try again later, or put a correct copy at {target} by hand, "
            f"or point COURSEKIT_DATA at a folder that already holds {dataset}.")
    raise offline_error(dataset, resource, folder, "; ".join(failures))


def _check_seconds(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive number of seconds."""
    if not value > 0:  # also refuses NaN
        raise ValueError(f"download {name} must be a positive number of seconds, not {value!r}")


def _reusable(target: Path, resource: Resource, dataset: str) -> bool:
    """Whether ``target`` is a sound copy of ``resource``; an unsound one is deleted, with a ``NOTE``."""
    if not target.is_file():
        return False
    problem = _defect(target, resource.checksum, resource.filename)
    if problem is None:
        return True
    print(f"NOTE: {target} is not a sound copy of {dataset}'s {resource.filename} ({problem}); "
          f"deleting it and downloading it again.")
    target.unlink()
    return False


def _new_part(folder: Path, filename: str) -> Path:
    """A new, empty temporary file for one download of ``filename``, private to this call."""
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    os.close(fd)
    return Path(name)


def _place(part: Path, target: Path, checksum: str | None) -> Path:
    """Move the sound download ``part`` onto ``target`` and return ``target``.

    Raises:
        OSError: the move failed and ``target`` is not a sound copy that another process put there.
    """
    try:
        os.replace(part, target)
    except OSError:
        if not verify(target, checksum):
            raise
    return target


def offline_error(dataset: str, resource: Resource | Sequence[Resource], folder: Path,
                  reason: str = "") -> DatasetNotFoundError:
    """The one clear error for a dataset that cannot be fetched.

    Names every file of ``resource`` (one or several) with its URL and the
    place to put it by hand, and ``COURSEKIT_DATA``. ``reason`` is kept on
    the error as ``.reason``.
    """
    resources = (resource,) if isinstance(resource, Resource) else tuple(resource)
    why = f" ({reason})" if reason else ""
    steps = "".join(f"  Download {r.urls[0]}\n  and put it at {Path(folder) / r.filename},\n" for r in resources)
    error = DatasetNotFoundError(
        f"{dataset} is not present and could not be downloaded{why}.\n{steps}"
        f"  (files put there are verified, and unpacked, the next time {dataset} is loaded),\n"
        f"  or point COURSEKIT_DATA (paths separated by '{os.pathsep}') at a folder that already holds {dataset}.")
    error.reason = reason
    return error


def _check_member_path(name: str, dest: Path) -> Path:
    """Where member ``name`` would be written under ``dest``.

    Raises:
        UnsafeArchiveError: the path is absolute, climbs out with ``..`` or lands outside ``dest``.
        _UnpackableMember: a part of the name is longer than ``NAME_MAX`` bytes.
    """
    pure = PurePosixPath(name.replace("\\", "/"))
    too_long = [part for part in pure.parts if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX]
    if too_long:
        raise _UnpackableMember(f"member {name[:60]!r}... has a name part of {len(too_long[0].encode())} bytes, "
                                f"longer than any common file system allows ({NAME_MAX})")
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path; refusing to extract.")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"archive member {name!r} climbs out of the target with '..'; refusing to extract.")
    target = (dest / pure).resolve()
    if dest != target and dest not in target.parents:
        raise UnsafeArchiveError(f"archive member {name!r} would land outside {dest}; refusing to extract.")
    return target


def _check_link(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse a tar link whose target leaves ``dest`` (symlinks resolve from their own folder)."""
    if PurePosixPath(member.linkname).is_absolute():
        raise UnsafeArchiveError(f"archive member {member.name!r} links to an absolute path; refusing to extract.")
    base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
    resolved = os.path.normpath(str(base / member.linkname))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(f"archive member {member.name!r} links outside the target; refusing to extract.")


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_member_path(member.name, dest)
            if member.issym() or member.islnk():
                _check_link(member, dest)
            elif member.isdev():
                raise UnsafeArchiveError(f"archive member {member.name!r} is a device file or pipe; "
                                         f"refusing to extract.")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(dest, members=members)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member_path(info.filename, dest)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"archive member {info.filename!r} is a symbolic link; refusing to extract.")
        for info in infos:
            target = _check_member_path(info.filename, dest)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest`` safely.

    Every member is checked before anything is written, and the archive is
    unpacked into a hidden staging folder inside ``dest`` that is moved into
    place only once everything was read, so an interrupted or failed
    extraction leaves nothing that looks complete; staging folders that
    killed extractions left are removed. Every failure is a ``RuntimeError``
    naming the archive, what went wrong and what to do.

    Returns:
        ``dest`` as a resolved ``Path``.

    Raises:
        UnsafeArchiveError: a member would leave ``dest``, or is a link or device file.
        RuntimeError: the archive is truncated or corrupt, a member cannot be written (a name too long,
            no space left, no permission), or something already in ``dest`` is in the member's way.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    tempfiles.remove_stale(dest, archive.name, ".partial")
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".partial", dir=dest))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, staging)
            else:
                _extract_tar(archive, staging)
        except tarfile.FilterError as exc:  # what tarfile's own data filter refuses, should a check miss it
            raise UnsafeArchiveError(f"{archive}: {exc}; refusing to extract. Delete it and download it again.") from None
        except _UnpackableMember as exc:
            raise RuntimeError(f"{archive} cannot be unpacked: {exc}. It is not the official archive; delete it "
                               f"and download it again.") from None
        except OSError as exc:
            if exc.errno is None or isinstance(exc, gzip.BadGzipFile):
                raise RuntimeError(f"{archive} is truncated or corrupt ({exc}); delete it and download it "
                                   f"again.") from None
            raise RuntimeError(f"{archive} could not be unpacked into {dest}: {exc.strerror} "
                               f"({exc.filename or dest}); free space or fix the folder's permissions, "
                               f"then try again.") from None
        except _ARCHIVE_ERRORS as exc:
            raise RuntimeError(f"{archive} is truncated or corrupt ({exc}); delete it and download it again.") from None
        _merge_into(staging, dest, archive)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _merge_into(src: Path, dst: Path, archive: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging folders that exist in both.

    Raises:
        RuntimeError: something in ``dst`` stands where the archive puts a file or folder of the other kind.
    """
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            _merge_into(child, target, archive)
            continue
        if target.is_dir() != child.is_dir() and (target.exists() or target.is_symlink()):
            kind = "folder" if target.is_dir() else "file"
            raise RuntimeError(f"{archive} could not be unpacked: {target} is a {kind} where the archive has a "
                               f"{'folder' if child.is_dir() else 'file'}; move it away and try again.")
        os.replace(child, target)

