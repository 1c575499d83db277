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
``COURSEKIT_HOME``     the kit's own folder, holding ``data/`` (the download cache) and ``checkpoints/``;
                       default: the source checkout when the kit runs from one, else ``~/.cache/coursekit``.

torch and NumPy are imported only by the functions that need them, so that the
``coursekit`` command answers ``--help`` without loading torch.
"""
from __future__ import annotations

import functools
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PROFILES = ("ci", "cpu", "full")
REPO_ROOT = Path(__file__).resolve().parent.parent


def is_checkout() -> bool:
    """Whether the package runs from a source checkout (``pyproject.toml`` beside it), not an installed copy."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "coursekit").is_dir()


def kit_home() -> Path:
    """The kit's own folder: ``data/`` (download cache) and ``checkpoints/`` live under it.

    ``COURSEKIT_HOME`` sets it (for example a Google Drive folder on Colab, so
    that downloads survive a new runtime). Otherwise it is the source checkout
    when the kit runs from one, and ``$XDG_CACHE_HOME/coursekit`` (by default
    ``~/.cache/coursekit``) for an installed kit, never ``site-packages``.
    Read at call time.
    """
    home = os.environ.get("COURSEKIT_HOME", "").strip()
    if home:
        return Path(home).expanduser().resolve()
    if is_checkout():
        return REPO_ROOT
    return (Path(os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache").expanduser() / "coursekit").resolve()


def default_data_root() -> Path:
    """The default download cache, ``kit_home() / "data"``; always the last data root searched."""
    return kit_home() / "data"


def checkpoint_dir() -> Path:
    """Where notebooks save the checkpoints they train: ``kit_home() / "checkpoints"``."""
    return kit_home() / "checkpoints"


@functools.lru_cache(maxsize=None)
def get_device() -> torch.device:
    """The one device the kit computes on: cuda, then mps, then cpu.

    ``COURSEKIT_DEVICE`` overrides the choice. The answer is cached, so the
    device is chosen once per process.
    """
    import torch

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
        import torch

        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(f"COURSEKIT_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}.")
    return name


def synthetic_allowed() -> bool:
    """Whether generated stand-in data may replace a missing dataset.

    Always true in the ``ci`` profile; elsewhere only when the user opts in
    with ``COURSEKIT_SYNTHETIC=1`` (or ``true``/``yes``; ``0``/``false``/``no``
    or unset: no).

    Raises:
        ValueError: ``COURSEKIT_SYNTHETIC`` holds anything else (say ``on``).
    """
    value = os.environ.get("COURSEKIT_SYNTHETIC", "").strip().lower()
    if value not in {"", "0", "false", "no", "1", "true", "yes"}:
        raise ValueError(f"COURSEKIT_SYNTHETIC={value!r} is not understood; set it to 1 to allow synthetic "
                         f"stand-in data, or unset it.")
    return value in {"1", "true", "yes"} or profile_name() == "ci"


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch; prefer deterministic kernels.

    Args:
        seed: the seed for every generator.
        deterministic: also ask torch for deterministic algorithms (with
            ``warn_only`` so ops without a deterministic version still run).

    Returns:
        A ``torch.Generator`` seeded with ``seed``, handy for DataLoaders.
    """
    import numpy as np
    import torch

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

    ``COURSEKIT_DATA`` lists them (``os.pathsep``-separated); the default
    cache ``default_data_root()`` always comes last.
    """
    roots = [Path(p).expanduser().resolve() for p in os.environ.get("COURSEKIT_DATA", "").split(os.pathsep) if p.strip()]
    if default_data_root() not in roots:
        roots.append(default_data_root())
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
