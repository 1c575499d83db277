"""Find a dataset under the data roots, fetch it, or stand in synthetic data.

Every dataset module describes itself with one ``DatasetSpec`` (its folder
under a data root, the files that must be there, its official downloads) and
calls ``locate``. The rules are the same for all datasets:

* ``root=None``: the data roots (``config.data_roots()``, i.e.
  ``COURSEKIT_DATA`` then the repository's ``data/``) are searched for
  ``<root>/<folder>``; a read-only root such as the offline mirror is fine.
* ``root`` given: only ``<root>/<folder>`` is looked at.
* Present means complete: a candidate folder must hold every required path
  and pass the dataset's cheap ``validate`` check (file counts, sizes,
  headers) wherever it is found, not only after a download. A folder that
  fails is skipped for the next root; when no root holds a valid copy, the
  first failure is raised as ``IncompleteDatasetError``.
* Missing: official archives already lying in the download folder (put
  there by hand, or by an earlier run) are verified and unpacked; otherwise,
  with ``download=True``, they are fetched into the writable root (or
  ``root``). Anything else ends in one ``DatasetNotFoundError`` that names
  the URLs, where to put the files and ``COURSEKIT_DATA``.

``locate_or_synthetic`` adds the stand-in rule for datasets that the
offline mirror lacks (PASCAL VOC, Oxford 17 Flowers): in the ``ci`` profile
it never downloads, and where ``config.synthetic_allowed()`` a missing
dataset is replaced by format-faithful synthetic data under
``config.writable_root()/synthetic``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import config, tempfiles
from . import download as dl

SYNTHETIC_FOLDER = "synthetic"


class IncompleteDatasetError(RuntimeError):
    """A dataset's folder exists but is incomplete or unreadable; the message names it and what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and how to fetch it.

    Attributes:
        name: the name used in messages, e.g. ``"MNIST"``.
        folder: the dataset's folder relative to a data root, e.g. ``"voc/VOCdevkit/VOC2012"``.
        required: paths relative to ``folder`` that must all exist for the dataset to count as present.
        resources: the official downloads.
        download_dir: where the downloads go, relative to the data root; archives
            (``.tar``, ``.tgz``, ``.tar.gz``, ``.zip``) are unpacked there.
        validate: a cheap completeness check of a dataset folder (file counts, sizes, headers; no full
            read), run wherever the dataset is found and after a fetch; raises ``IncompleteDatasetError``.
        read_all: a thorough check that reads every file as the loader would (``coursekit data``);
            raises ``IncompleteDatasetError`` naming the first unreadable file.
    """

    name: str
    folder: str
    required: tuple[str, ...]
    resources: tuple[dl.Resource, ...]
    download_dir: str
    validate: Callable[[Path], None] | None = None
    read_all: Callable[[Path], None] | None = None

    def is_complete(self, folder: Path) -> bool:
        """Whether ``folder`` holds every required path."""
        return all((folder / rel).exists() for rel in self.required)

    def check(self, folder: Path) -> None:
        """Raise ``IncompleteDatasetError`` unless ``folder`` holds every required path and passes ``validate``."""
        missing = [rel for rel in self.required if not (folder / rel).exists()]
        if missing:
            raise IncompleteDatasetError(f"{self.name}: {folder} lacks {', '.join(missing)}; copy or fetch it again.")
        if self.validate is not None:
            self.validate(folder)


def copies(spec: DatasetSpec, root: str | os.PathLike | None = None) -> Iterator[tuple[Path, IncompleteDatasetError | None]]:
    """Each folder under ``root`` (or the data roots, in order) that holds the required paths of ``spec``.

    Yields:
        ``(folder, problem)``: ``problem`` is ``None`` for a complete copy, else why ``spec.check`` refused it.
    """
    roots = [Path(root).expanduser()] if root is not None else config.data_roots()
    for base in roots:
        folder = base / spec.folder
        if not spec.is_complete(folder):
            continue
        try:
            spec.check(folder)
        except IncompleteDatasetError as exc:
            yield folder, exc
            continue
        yield folder, None


def find(spec: DatasetSpec, root: str | os.PathLike | None = None) -> Path | None:
    """The first complete copy of the dataset under ``root`` (or the data roots), or ``None`` when none has one.

    A folder that holds the required paths but fails ``spec.validate`` is passed
    over for the next root.

    Raises:
        IncompleteDatasetError: copies were found, but none is complete (the first one's reason).
    """
    failures = []
    for folder, problem in copies(spec, root):
        if problem is None:
            return folder
        failures.append(problem)
    if failures:
        raise failures[0]
    return None


def locate(spec: DatasetSpec, root: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The folder of a present dataset, fetching or unpacking it when needed.

    Args:
        spec: the dataset.
        root: a data root to use instead of searching ``config.data_roots()``.
        download: fetch the official files when the dataset is missing.

    Returns:
        The dataset folder ``<root>/<spec.folder>``.

    Raises:
        DatasetNotFoundError: missing and not fetched; the message says what to do.
        ChecksumError: a download did not match its published checksum.
    """
    found = find(spec, root)
    if found is not None:
        return found
    target = Path(root).expanduser() if root is not None else _download_root(spec)
    archive_dir = target / spec.download_dir
    missing = [r for r in spec.resources if not dl.verify(archive_dir / r.filename, r.checksum)]
    if download or not missing:
        return _fetch(spec, target)
    unsound = [archive_dir / r.filename for r in missing if (archive_dir / r.filename).exists()]
    if unsound:
        raise dl.offline_error(spec.name, missing, archive_dir,
                               f"{unsound[0]} is there but is not a sound copy (wrong checksum, truncated or "
                               f"corrupt): delete it, then download again")
    raise dl.offline_error(spec.name, missing, archive_dir, "download=False; pass download=True to fetch it")


def _download_root(spec: DatasetSpec) -> Path:
    """The writable data root that downloads of ``spec`` go to.

    Raises:
        DatasetNotFoundError: no data root can be written to, so the missing dataset cannot be fetched.
    """
    try:
        return config.writable_root()
    except PermissionError as exc:
        error = dl.DatasetNotFoundError(f"{spec.name} is not present in any data root "
                                        f"({', '.join(map(str, config.data_roots()))}), and none of them can be "
                                        f"written to, so it cannot be downloaded: {exc}")
        error.reason = "no writable data root"
        raise error from None


def _fetch(spec: DatasetSpec, target: Path) -> Path:
    """Download (or reuse) every resource into ``target/download_dir``, unpack, check."""
    archive_dir = target / spec.download_dir
    for index, resource in enumerate(spec.resources):
        try:
            path = dl.download(resource, archive_dir, spec.name)
        except dl.DatasetNotFoundError as exc:
            missing = [r for r in spec.resources[index:] if not dl.verify(archive_dir / r.filename, r.checksum)]
            raise dl.offline_error(spec.name, missing, archive_dir, exc.reason) from None
        if path.name.endswith(dl.ARCHIVE_SUFFIXES):
            dl.extract(path, archive_dir)
    folder = target / spec.folder
    try:
        spec.check(folder)
    except IncompleteDatasetError as exc:
        raise IncompleteDatasetError(f"after unpacking the downloads in {archive_dir}: {exc}") from None
    return folder


def synthetic_root() -> Path:
    """The data root that holds generated stand-in datasets: ``<writable root>/synthetic``."""
    return config.writable_root() / SYNTHETIC_FOLDER


def ensure_synthetic(spec: DatasetSpec, write: Callable[[Path], object]) -> Path:
    """The synthetic stand-in for ``spec``, generated by ``write(root)`` only if missing.

    ``write`` lays the dataset out under the data root it is given, in the
    official format. It runs in a private staging folder that is moved into
    place at the end, so an interrupted run leaves nothing that looks complete
    (and the next run removes what it left, once stale).
    """
    root = synthetic_root()
    folder = root / spec.folder
    if _sound(spec, folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    top = spec.folder.split("/")[0]
    tempfiles.remove_stale(root, top, ".partial")
    staging = Path(tempfile.mkdtemp(prefix=f".{top}.", suffix=".partial", dir=root))
    try:
        write(staging)
        spec.check(staging / spec.folder)
        if not _sound(spec, folder):  # a damaged stand-in is replaced too
            shutil.rmtree(root / top, ignore_errors=True)
            try:
                os.replace(staging / top, root / top)
            except OSError:
                if not _sound(spec, folder):  # else another process finished first
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _sound(spec: DatasetSpec, folder: Path) -> bool:
    """Whether ``folder`` holds a complete copy of ``spec`` (``DatasetSpec.check`` passes)."""
    try:
        spec.check(folder)
    except IncompleteDatasetError:
        return False
    return True


_ANNOUNCED: set[str] = set()  # datasets whose synthetic stand-in was announced in this process


# The line a run prints when it falls back to stand-in data (the course build reads it back).
SYNTHETIC_NOTE = "NOTE: {name} is not available here, so this uses synthetic stand-in data (generated shapes, not real photos)."


def locate_or_synthetic(spec: DatasetSpec, root: str | os.PathLike | None, download: bool,
                        write: Callable[[Path], object]) -> tuple[Path, bool]:
    """``locate``, falling back to synthetic data where ``config.synthetic_allowed()``.

    In the ``ci`` profile nothing is downloaded (runs stay offline and
    deterministic): real data is used when present, synthetic data otherwise.
    In other profiles synthetic data is used only on opt-in
    (``COURSEKIT_SYNTHETIC=1``) and only after the real data could not be had.
    A fallback prints one line starting ``NOTE:``, once per dataset and process.

    Returns:
        ``(folder, synthetic)``: the dataset folder and whether it is synthetic.
    """
    try:
        return locate(spec, root, download=download and config.profile_name() != "ci"), False
    except dl.DatasetNotFoundError as exc:
        if not config.synthetic_allowed():
            error = dl.DatasetNotFoundError(f"{exc}\n  Or set COURSEKIT_SYNTHETIC=1 to use synthetic stand-in data.")
            error.reason = exc.reason
            raise error from None
    folder = ensure_synthetic(spec, write)
    if spec.name not in _ANNOUNCED:
        _ANNOUNCED.add(spec.name)
        print(SYNTHETIC_NOTE.format(name=spec.name))
    return folder, True
