"""Fetch, verify and extract dataset files, safely.

Downloads stream into ``<name>.part`` next to the target, are checked
against their checksum and only then renamed into place, so an interrupted
or corrupt download never leaves a file that looks complete. Archives are
extracted member by member after refusing absolute paths, ``..`` components
and links that leave the target folder.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from .. import config

CHUNK = 1 << 20


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither present under a data root nor downloadable; ``reason`` says why a fetch failed."""

    reason = ""


class ChecksumError(RuntimeError):
    """A file's checksum does not match the expected one."""


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written outside the extraction folder."""


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
    """True when ``path`` exists and matches ``checksum`` (``"md5:..."``/``"sha256:..."``).

    A ``None`` checksum only checks that the file exists and is not empty.
    """
    path = Path(path)
    if not path.is_file():
        return False
    if checksum is None:
        return path.stat().st_size > 0
    algorithm, _, expected = checksum.partition(":")
    return file_digest(path, algorithm) == expected.lower()


def _stream(url: str, part: Path, desc: str, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "coursekit"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))


def download(resource: Resource, folder: str | os.PathLike, dataset: str, timeout: float = 30.0) -> Path:
    """Download ``resource`` into ``folder`` and verify it; return the file's path.

    A file already present and valid is reused. The bytes go to a ``.part``
    file that is renamed only after the checksum matched; on any failure the
    ``.part`` file is removed.

    Raises:
        ChecksumError: the download's checksum is wrong (the file is deleted).
        DatasetNotFoundError: no URL could be reached; says where to put the file by hand.
    """
    folder = Path(folder)
    target = folder / resource.filename
    if verify(target, resource.checksum):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    errors = []
    for url in resource.urls:
        try:
            _stream(url, part, desc=resource.filename, timeout=timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            part.unlink(missing_ok=True)
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if not verify(part, resource.checksum):
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{dataset}: the download of {resource.filename} from {url} does not match its checksum "
                f"{resource.checksum}; the file was deleted. Try again, or fetch it by hand into {folder}.")
        os.replace(part, target)
        return target
    raise offline_error(dataset, resource, folder, "; ".join(errors))


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
    pure = PurePosixPath(name.replace("\\", "/"))
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
    extraction leaves nothing that looks complete. A truncated or corrupt
    archive raises ``RuntimeError`` naming the file and what to do.

    Returns:
        ``dest`` as a resolved ``Path``.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".partial", dir=dest))
    try:
        try:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, staging)
            else:
                _extract_tar(archive, staging)
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise RuntimeError(f"{archive} is truncated or corrupt ({exc}); delete it and download it again.") from None
        _merge_into(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _merge_into(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging folders that exist in both."""
    for child in src.iterdir():
        target = dst / child.name
        if child.is_dir() and not child.is_symlink() and target.is_dir():
            _merge_into(child, target)
        else:
            os.replace(child, target)


def find_in_roots(folder: str, required: tuple[str, ...]) -> Path | None:
    """The first ``<root>/<folder>`` among the data roots that holds every ``required`` path."""
    for root in config.data_roots():
        candidate = root / folder
        if all((candidate / rel).exists() for rel in required):
            return candidate
    return None
