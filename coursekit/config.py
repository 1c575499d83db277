"""Run-time configuration: device, profile, seeding and data roots.

Everything here is read from the environment once and then cached, so a
notebook, the test suite and the ``coursekit`` command agree on one device,
one profile and one list of data roots.

Environment variables
---------------------
``COURSEKIT_DEVICE``   force ``cuda``, ``mps`` or ``cpu`` (or e.g. ``cuda:1``).
``COURSEKIT_PROFILE``  ``ci``, ``cpu`` or ``full``; default ``full`` with CUDA, else ``cpu``.
``COURSEKIT_DATA``     roots searched for datasets, separated by ``os.pathsep``.
``COURSEKIT_SYNTHETIC`` set to ``1`` to allow generated stand-in data outside the ``ci`` profile.
"""
from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import numpy as np
import torch

PROFILES = ("ci", "cpu", "full")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO_ROOT / "data"


@functools.lru_cache(maxsize=None)
def get_device() -> torch.device:
    """The one device the kit computes on: cuda, then mps, then cpu.

    ``COURSEKIT_DEVICE`` overrides the choice. The answer is cached, so the
    device is chosen once per process.
    """
    forced = os.environ.get("COURSEKIT_DEVICE", "").strip()
    if forced:
        device = torch.device(forced)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("COURSEKIT_DEVICE asks for CUDA, but torch sees no CUDA device; "
                               "unset COURSEKIT_DEVICE or set it to 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def profile_name() -> str:
    """The active profile: ``ci``, ``cpu`` or ``full``.

    ``COURSEKIT_PROFILE`` selects it; without it the profile is ``full`` when
    CUDA is available and ``cpu`` otherwise.
    """
    name = os.environ.get("COURSEKIT_PROFILE", "").strip().lower()
    if not name:
        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"COURSEKIT_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}.")
    return name


def synthetic_allowed() -> bool:
    """Whether generated stand-in data may replace a missing dataset.

    Always true in the ``ci`` profile; elsewhere only when the user opts in
    with ``COURSEKIT_SYNTHETIC=1``.
    """
    opted_in = os.environ.get("COURSEKIT_SYNTHETIC", "").strip().lower() in {"1", "true", "yes"}
    return opted_in or profile_name() == "ci"


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; prefer deterministic kernels.

    Args:
        seed: the seed for every generator.
        deterministic: also ask torch for deterministic algorithms (with
            ``warn_only`` so ops without a deterministic version still run).

    Returns:
        A ``torch.Generator`` seeded with ``seed``, handy for DataLoaders.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode would also fill every new tensor with NaN first: pure cost, no determinism gained.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def data_roots() -> list[Path]:
    """The data roots, searched in order for an already-present dataset.

    ``COURSEKIT_DATA`` lists them (``os.pathsep``-separated); the repository's
    ``data/`` folder always comes last as the default cache.
    """
    roots = [Path(p).expanduser().resolve() for p in os.environ.get("COURSEKIT_DATA", "").split(os.pathsep) if p.strip()]
    if DEFAULT_DATA_ROOT not in roots:
        roots.append(DEFAULT_DATA_ROOT)
    return roots


def _is_writable(path: Path) -> bool:
    """Whether ``path`` (or its nearest existing parent) may be written to.

    A folder whose permission bits grant no write access (like the read-only
    data mirror) counts as read-only even for root, whom ``os.access`` lets
    write anywhere.
    """
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


MIRROR_MANIFEST = "SHA256SUMS"


def is_mirror(root: Path) -> bool:
    """Whether ``root`` is a checksummed mirror (it has a ``SHA256SUMS`` manifest).

    A mirror is only read from: writing into it would break its manifest.
    """
    return (Path(root) / MIRROR_MANIFEST).is_file()


def writable_root() -> Path:
    """The first data root that can be written to: where downloads go.

    Roots that are read-only for this user, and checksummed mirrors
    (``is_mirror``), are skipped.

    Raises:
        PermissionError: if no root is writable.
    """
    for root in data_roots():
        if not is_mirror(root) and _is_writable(root):
            return root
    raise PermissionError("No writable data root: add a writable folder to COURSEKIT_DATA "
                          f"(searched {', '.join(map(str, data_roots()))}).")
