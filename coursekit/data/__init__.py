"""The course's datasets: one module per dataset, plus fetching, synthetic stand-ins and status.

* ``mnist``, ``cifar``, ``voc``, ``cmp_facade``, ``flowers``: torchvision-style
  loaders that read the official on-disk formats (``arrays``: the shared
  in-memory image Dataset; ``matfile``: MATLAB files without SciPy);
* ``download``: fetch, verify and safely extract; ``locate``: find a dataset
  under the data roots, fetch it, or fall back to ``synthetic`` data;
* ``status``: the registry of all datasets and the ``make data`` table.
"""
from .status import DATASETS, Row, format_table, prepare_all

__all__ = ["DATASETS", "Row", "format_table", "prepare_all"]
