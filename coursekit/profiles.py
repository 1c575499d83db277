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
    # Part A (CMP Facade, FCNs): facade_size = (height, width) every photo is resized to;
    # *_images: how many of a split are used (None: all). Part B (VOC, encoder-decoder):
    # voc_crop: training crop side; voc_val_size: side validation images are padded to (void), so
    # they can be batched; overfit: epochs × steps per epoch on the single sanity image.
    "04_fcn": {
        "ci": {"facade_size": (64, 48), "facade_train_images": 1, "facade_test_images": 2,
               "facade_batch_size": 1, "facade_epochs": 3, "facade_lr": 1e-4,
               "voc_backbone": "resnet18", "voc_crop": 64, "voc_val_size": 128, "voc_train_images": 32,
               "voc_val_images": 16, "voc_batch_size": 8, "voc_epochs": 2, "voc_lr": 1e-3,
               "overfit_epochs": 8, "overfit_steps": 5, "overfit_lr": 1e-3, "num_workers": 0},
        "cpu": {"facade_size": (128, 96), "facade_train_images": 8, "facade_test_images": 8,
                "facade_batch_size": 2, "facade_epochs": 5, "facade_lr": 1e-4,
                "voc_backbone": "resnet18", "voc_crop": 128, "voc_val_size": 512, "voc_train_images": 200,
                "voc_val_images": 50, "voc_batch_size": 8, "voc_epochs": 4, "voc_lr": 1e-3,
                "overfit_epochs": 10, "overfit_steps": 5, "overfit_lr": 1e-3, "num_workers": 2},
        "full": {"facade_size": (512, 384), "facade_train_images": None, "facade_test_images": None,
                 "facade_batch_size": 4, "facade_epochs": 60, "facade_lr": 1e-4,
                 "voc_backbone": "resnet50", "voc_crop": 320, "voc_val_size": 512, "voc_train_images": None,
                 "voc_val_images": None, "voc_batch_size": 16, "voc_epochs": 60, "voc_lr": 1e-4,
                 "overfit_epochs": 20, "overfit_steps": 5, "overfit_lr": 1e-3, "num_workers": 4},
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
