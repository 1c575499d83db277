"""Per-notebook sizes and epochs for each profile.

Notebooks never hard-code how much data or how many epochs they use; they
ask ``settings("<notebook>")`` and get the numbers of the active profile:

* ``ci``   tiny and deterministic: the stored notebook outputs come from it;
* ``cpu``  meaningful results in minutes on a 2-core laptop;
* ``full`` the handouts' full runs, meant for a GPU.
"""
from __future__ import annotations

from types import SimpleNamespace

from . import config

# One entry per notebook: {profile: {setting: value}}. Keys are the notebook
# file names without ".ipynb".
SETTINGS: dict[str, dict[str, dict]] = {
    "01_transforms": {  # crop_size: side of the training crops; val batches hold whole images, so size 1
        "ci": {"crop_size": 96, "batch_size": 4, "val_batch_size": 1, "num_workers": 0},
        "cpu": {"crop_size": 256, "batch_size": 8, "val_batch_size": 1, "num_workers": 2},
        "full": {"crop_size": 320, "batch_size": 16, "val_batch_size": 1, "num_workers": 4},
    },
}


def settings(notebook: str, profile: str | None = None) -> SimpleNamespace:
    """The settings of ``notebook`` under ``profile`` (default: the active one).

    Returns:
        A namespace with the profile's values plus ``profile`` (its name).

    Raises:
        KeyError: the notebook has no settings table.
    """
    profile = profile or config.profile_name()
    if notebook not in SETTINGS:
        raise KeyError(f"no profile settings for notebook {notebook!r}; known: {sorted(SETTINGS)}")
    return SimpleNamespace(profile=profile, **SETTINGS[notebook][profile])
