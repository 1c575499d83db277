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
    # toy_*: the 2-D moons warm-up; train_size: MNIST training images used (None: all that remain after
    # holding out the last val_size of the training split for validation); hidden: the MNIST net's hidden
    # layers; ablation_*: extra nets compared after ablation_epochs; gradcheck_*: samples in the checked batch
    # and entries checked per parameter array.
    "02_backprop": {
        "ci": {"toy_samples": 200, "toy_hidden": (16,), "toy_epochs": 300, "toy_lr": 1.0, "toy_batch_size": 10,
               "train_size": None, "val_size": 1000, "hidden": (500, 50), "epochs": 10, "lr": 1.0,
               "batch_size": 16, "ablation_hidden": ((), (500,), (500, 50, 50)), "ablation_epochs": 10,
               "gradcheck_samples": 5, "gradcheck_entries": 20, "min_test_accuracy": 0.93},
        "cpu": {"toy_samples": 200, "toy_hidden": (16,), "toy_epochs": 300, "toy_lr": 1.0, "toy_batch_size": 10,
                "train_size": 20000, "val_size": 2000, "hidden": (500, 50), "epochs": 15, "lr": 1.0,
                "batch_size": 16, "ablation_hidden": ((), (500,), (500, 50, 50)), "ablation_epochs": 10,
                "gradcheck_samples": 5, "gradcheck_entries": 20, "min_test_accuracy": 0.93},
        "full": {"toy_samples": 200, "toy_hidden": (16,), "toy_epochs": 300, "toy_lr": 1.0, "toy_batch_size": 10,
                 "train_size": None, "val_size": 5000, "hidden": (500, 50), "epochs": 30, "lr": 0.5,
                 "batch_size": 16, "ablation_hidden": ((), (500,), (500, 50, 50)), "ablation_epochs": 10,
                 "gradcheck_samples": 10, "gradcheck_entries": 100, "min_test_accuracy": 0.97},
    },
    # train_images: how many training images are used (None: all; the offline mirror has 10,000, the official
    # set 50,000; the test split is always used whole). Net: the handout's network; better: BetterNet with batch
    # norm, trained with augmentation and a one-cycle schedule. Learning rates are SGD (momentum 0.9) peaks.
    "03_cifar_classifier": {
        "ci": {"train_images": 10000, "net_batch_size": 32, "net_epochs": 4, "net_lr": 0.01,
               "better_width": 16, "better_batch_size": 64, "better_epochs": 4, "better_lr": 0.1},
        "cpu": {"train_images": 20000, "net_batch_size": 32, "net_epochs": 10, "net_lr": 0.01,
                "better_width": 32, "better_batch_size": 64, "better_epochs": 18, "better_lr": 0.1},
        "full": {"train_images": None, "net_batch_size": 32, "net_epochs": 20, "net_lr": 0.01,
                 "better_width": 64, "better_batch_size": 128, "better_epochs": 40, "better_lr": 0.1},
    },
    # Part A (CMP Facade, FCNs): facade_size = (height, width) every photo is resized to;
    # *_images: how many of a split are used (None: all); facade_width: the FCNs' channel multiplier (1: VGG16
    # itself, initialised from ImageNet; below 1: initialised from the kit's CIFAR-10 VGG16 of that width,
    # trained for trunk_epochs on trunk_images CIFAR-10 images, None: all, and cached outside ci).
    # Part B (VOC, encoder-decoder): voc_crop: training crop side; voc_val_size: the most validation images are
    # padded to (void) so they can be batched (VOCSegmentation.padded_side: the longest used image's side, rounded up
    # to 32); overfit: epochs × steps per epoch on the single sanity image.
    "04_fcn": {
        "ci": {"facade_size": (128, 96), "facade_train_images": 32, "facade_test_images": 16,
               "facade_batch_size": 4, "facade_epochs": 15, "facade_lr": 2e-3, "facade_shown": 1,
               "facade_width": 0.125, "trunk_epochs": 10, "trunk_images": None,
               "voc_backbone": "resnet18", "voc_crop": 96, "voc_val_size": 128, "voc_train_images": 64,
               "voc_val_images": 16, "voc_batch_size": 8, "voc_epochs": 8, "voc_lr": 1e-3,
               "overfit_epochs": 6, "overfit_steps": 4, "overfit_lr": 2e-3, "num_workers": 0},
        "cpu": {"facade_size": (128, 96), "facade_train_images": 64, "facade_test_images": None,
                "facade_batch_size": 4, "facade_epochs": 15, "facade_lr": 2e-3, "facade_shown": 2,
                "facade_width": 0.125, "trunk_epochs": 10, "trunk_images": None,
                "voc_backbone": "resnet18", "voc_crop": 128, "voc_val_size": 512, "voc_train_images": 200,
                "voc_val_images": 50, "voc_batch_size": 8, "voc_epochs": 12, "voc_lr": 1e-3,
                "overfit_epochs": 10, "overfit_steps": 5, "overfit_lr": 1e-3, "num_workers": 2},
        "full": {"facade_size": (512, 384), "facade_train_images": None, "facade_test_images": None,
                 "facade_batch_size": 4, "facade_epochs": 60, "facade_lr": 1e-4, "facade_shown": 3,
                 "facade_width": 1.0, "trunk_epochs": None, "trunk_images": None,
                 "voc_backbone": "resnet50", "voc_crop": 320, "voc_val_size": 512, "voc_train_images": None,
                 "voc_val_images": None, "voc_batch_size": 16, "voc_epochs": 60, "voc_lr": 1e-4,
                 "overfit_epochs": 20, "overfit_steps": 5, "overfit_lr": 1e-3, "num_workers": 4},
    },
    # CIFAR-10 horses. train_images: how many training horses are used (None: all; 1,000 on the offline mirror,
    # 5,000 in the official set; the palette is always fitted on all of them, the 200 / 1,000 test horses are the
    # validation set); num_filters, kernel: the networks' NF and kernel side; lr: Adam's; study_*: the batch-size
    # study (ConvTransposeNet, study_epochs each); shown: images per figure strip.
    "05_colorization": {
        "ci": {"train_images": 300, "num_filters": 16, "kernel": 3, "batch_size": 20, "epochs": 3, "lr": 3e-3,
               "study_batch_sizes": (20, 60, 150), "study_epochs": 2, "shown": 6},
        "cpu": {"train_images": None, "num_filters": 32, "kernel": 3, "batch_size": 20, "epochs": 25, "lr": 2e-3,
                "study_batch_sizes": (16, 32, 64, 128, 256), "study_epochs": 10, "shown": 8},
        "full": {"train_images": None, "num_filters": 32, "kernel": 3, "batch_size": 100, "epochs": 25, "lr": 1e-3,
                 "study_batch_sizes": (32, 64, 128, 256, 512), "study_epochs": 25, "shown": 8},
    },
    # backbone: DeepLabv3's (mobilenet_v3_large, resnet50 or resnet101); image_size: side every photo and trimap
    # is resized to; *_images: how many of a split are used (None: all); lr: Adam's, for the new last layer
    # alone (the same for both losses); shown: images per figure; min_val_miou: the validation mIoU the
    # cross-entropy head must reach (None: not asserted, as with random weights or synthetic data).
    "06_finetuning": {
        "ci": {"backbone": "mobilenet_v3_large", "image_size": 64, "train_images": 24, "val_images": 12,
               "batch_size": 8, "epochs": 3, "lr": 1e-2, "shown": 2, "min_val_miou": None, "num_workers": 0},
        "cpu": {"backbone": "mobilenet_v3_large", "image_size": 128, "train_images": 200, "val_images": 100,
                "batch_size": 8, "epochs": 5, "lr": 5e-3, "shown": 3, "min_val_miou": None, "num_workers": 2},
        "full": {"backbone": "resnet101", "image_size": 320, "train_images": None, "val_images": None,
                 "batch_size": 16, "epochs": 20, "lr": 1e-3, "shown": 3, "min_val_miou": 0.80, "num_workers": 4},
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
