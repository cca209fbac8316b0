"""Segmentation datasets in their official on-disk layouts, behind one registry.

>>> import datasets
>>> ds = datasets.build("synapse", root="data/Synapse", split="train", img_size=224)

Note: this top-level package is named ``datasets`` and shadows Hugging Face's ``datasets`` when
both are importable; segloss-bench does not depend on the latter.
"""

from . import cityscapes, synapse, synthetic, synthia  # noqa: F401  (importing a module registers its datasets)
from .base import IGNORE_INDEX, SegDataset
from .registry import DatasetInfo, build, dataset_info, list_datasets, register_dataset

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "SegDataset",
    "build",
    "dataset_info",
    "list_datasets",
    "register_dataset",
]
