"""The course's datasets in one registry, and the status table of ``make data``.

``prepare_all(download=True)`` finds (or fetches) every dataset and checks
it: a copy counts only when it is complete (``DatasetSpec.validate``) and
every file reads as the loader reads it (``DatasetSpec.read_all``); where a
data root carries a ``SHA256SUMS`` file (the offline mirror), every file the
dataset has there is also verified against it. ``format_table`` turns the
rows into the table that ``python -m coursekit data`` prints; a row that is
not ``ok`` makes the command exit with status 1.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import config, tables
from . import cifar, cmp_facade, flowers, mnist, voc
from .download import ChecksumError, DatasetNotFoundError, file_digest
from .locate import SYNTHETIC_NOTE, DatasetSpec, IncompleteDatasetError, copies, locate, locate_or_synthetic


@dataclass(frozen=True)
class Entry:
    """One dataset of the registry.

    Attributes:
        key: the short name shown in the table.
        spec: where it lives and how to fetch it.
        write_synthetic: writes the stand-in for datasets that may be replaced by synthetic data.
        optional: a missing optional dataset does not make the table fail.
    """

    key: str
    spec: DatasetSpec
    write_synthetic: Callable[[Path], object] | None = None
    optional: bool = False


@dataclass(frozen=True)
class Row:
    """One line of the status table; ``ok`` is false for what needs the user's attention."""

    dataset: str
    where: str
    files: int
    status: str
    ok: bool


DATASETS = (
    Entry("mnist", mnist.SPEC),
    Entry("cifar10", cifar.SPEC),
    Entry("cmp_facade", cmp_facade.BASE_SPEC),
    Entry("cmp_facade/extended", cmp_facade.EXTENDED_SPEC, optional=True),
    Entry("voc", voc.SPEC, voc.write_synthetic),
    Entry("flowers17", flowers.SPEC, flowers.write_synthetic),
)


def count_files(folder: Path) -> int:
    """Number of files below ``folder``."""
    return sum(len(files) for _, _, files in os.walk(folder))


def verify_against_sums(spec: DatasetSpec, folder: Path) -> str | None:
    """Check ``folder`` against the ``SHA256SUMS`` of its data root.

    Returns:
        ``None`` when the root has no such file or it lists nothing of the
        dataset; else ``"verified (mirror SHA256SUMS)"`` or a line saying how
        many files differ or are missing.
    """
    root = folder
    for _ in spec.folder.split("/"):
        root = root.parent
    sums = root / config.MIRROR_MANIFEST
    if not sums.is_file():
        return None
    prefix = spec.folder + "/"
    listed = [line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip()]
    listed = [(digest.lower(), name.lstrip("*")) for digest, name in listed if name.lstrip("*").startswith(prefix)]
    if not listed:
        return None
    bad = [name for digest, name in listed
           if not (root / name).is_file() or file_digest(root / name, "sha256") != digest]
    if bad:
        return (f"checksum mismatch: {len(bad)} of {len(listed)} files differ from {sums} "
                f"(e.g. {bad[0]}); copy them again")
    return f"verified (mirror {config.MIRROR_MANIFEST})"


def _missing_hint(entry: Entry, download: bool) -> str:
    resources = entry.spec.resources
    try:
        place = config.writable_root() / entry.spec.download_dir
    except PermissionError:
        place = Path("<a writable folder in COURSEKIT_DATA>") / entry.spec.download_dir
    source = resources[0].urls[0].rsplit("/", 1)[0] + "/"
    files = ", ".join(r.filename for r in resources)
    action = "could not download" if download else "not downloaded (run without --no-download)"
    hint = f"missing: {action}; put {files} from {source} in {place}, or set COURSEKIT_DATA"
    if entry.write_synthetic is not None:
        hint += " (COURSEKIT_SYNTHETIC=1 uses stand-in data)"
    return hint


def prepare(entry: Entry, download: bool = True) -> Row:
    """Find (or fetch, or stand in for) one dataset and check it.

    Never raises for a missing, incomplete or broken dataset: the row says what to do.
    """
    try:
        found = list(copies(entry.spec))
        present = any(problem is None for _, problem in found)
        if entry.write_synthetic is not None:
            folder, synthetic = locate_or_synthetic(entry.spec, None, download, entry.write_synthetic)
        else:
            folder, synthetic = locate(entry.spec, None, download), False
    except IncompleteDatasetError as exc:
        return Row(entry.key, "incomplete", 0, f"incomplete: {_one_line(exc)}", ok=False)
    except DatasetNotFoundError:
        return Row(entry.key, "missing", 0, _missing_hint(entry, download), ok=entry.optional)
    except (ChecksumError, RuntimeError, OSError) as exc:
        return Row(entry.key, "missing", 0, f"failed: {_one_line(exc)}", ok=False)
    if entry.spec.read_all is not None:
        try:
            entry.spec.read_all(folder)
        except IncompleteDatasetError as exc:
            return Row(entry.key, str(folder), count_files(folder), f"unreadable: {_one_line(exc)}", ok=False)
    if synthetic:
        status = "synthetic (stand-in data, not real photos)"
    elif not present:
        checked = all(r.checksum for r in entry.spec.resources)
        status = "downloaded (checksums verified)" if checked else "downloaded (contents checked)"
    else:
        status = verify_against_sums(entry.spec, folder) or "ok"
    passed_over = [(other, problem) for other, problem in found if problem is not None]
    if passed_over:
        status += "".join(f"; passed over {other}: {_one_line(problem)}" for other, problem in passed_over)
    return Row(entry.key, str(folder), count_files(folder), status, ok=not status.startswith("checksum"))


def _one_line(exc: BaseException) -> str:
    """An error's message on one line (multi-line messages joined with spaces)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def origin(key: str, printed: str = "") -> str:
    """Where dataset ``key`` of the registry comes from for a run that printed ``printed``.

    Returns:
        ``"synthetic"`` when the run printed the stand-in note for it, else
        ``"mirror"`` (a complete copy in a checksummed mirror), ``"local copy"``
        (a complete copy elsewhere, e.g. the download cache) or ``"missing"``.

    Raises:
        KeyError: ``key`` is not in ``DATASETS``.
    """
    entry = {e.key: e for e in DATASETS}[key]
    if SYNTHETIC_NOTE.format(name=entry.spec.name) in printed:
        return "synthetic"
    for folder, problem in copies(entry.spec):
        if problem is None:
            root = folder.parents[len(Path(entry.spec.folder).parts) - 1]
            return "mirror" if config.is_mirror(root) else "local copy"
    return "missing"


def prepare_all(download: bool = True) -> list[Row]:
    """One ``Row`` per registered dataset, fetching what is missing when ``download``."""
    return [prepare(entry, download) for entry in DATASETS]


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned plain-text table: dataset, where found, files, status."""
    cells = [(r.dataset, r.where, str(r.files) if r.where not in ("missing", "incomplete") else "-", r.status)
             for r in rows]
    return tables.format_table(("dataset", "where found", "files", "status"), cells, right=(2,))
