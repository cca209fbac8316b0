"""SYNTHIA-RAND-CITYSCAPES in its official layout, mapped to the 19 Cityscapes train classes.

Layout under ``root`` (the ``RAND_CITYSCAPES`` folder of ``SYNTHIA_RAND_CITYSCAPES.rar``)::

    RGB/0000000.png          RGB, 1280×760
    GT/LABELS/0000000.png    16-bit, 3 channels; the class id (0–22) is in the first (R) channel

Labels are read with OpenCV (``IMREAD_UNCHANGED``; cv2 returns BGR(A), so R is channel 2); imageio's
FreeImage plugin is avoided because it downloads itself at run time. Synthia ids become Cityscapes
train ids with DAFormer's table (from SYNTHIA's README); void, parking-slot, road-work and
lanemarking → 255. A value above 22 is an error naming the file, checked as each image is loaded.

Synthia has no official split. Here ``val`` is every image whose stem hashes to
``zlib.crc32(stem) % 10 == 0`` (about 10 %), ``train`` the rest, and ``all`` every image (the
domain-adaptation setting: train on Synthia, evaluate on Cityscapes val). The rule depends only on the
file name, so it is the same on every machine and for any subset of the files. Evaluation items are
padded from 760 to 768 rows (label 255). ``eval_subsets`` holds the train ids of the standard
Synthia→Cityscapes scores: mIoU16 leaves out terrain, truck and train (absent from Synthia), mIoU13
also wall, fence and pole.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cityscapes import CLASS_NAMES, StreetSceneDataset, pair_files, read_png
from .labels import IGNORE_INDEX
from .registry import register_dataset

#: Synthia class id → Cityscapes train id (DAFormer's mapping); other ids are ignored
SYNTHIA_TO_TRAIN = {
    3: 0,
    4: 1,
    2: 2,
    21: 3,
    5: 4,
    7: 5,
    15: 6,
    9: 7,
    6: 8,
    16: 9,
    1: 10,
    10: 11,
    17: 12,
    8: 13,
}
SYNTHIA_TO_TRAIN |= {18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, np.uint8)
LABEL_TO_TRAIN[list(SYNTHIA_TO_TRAIN)] = list(SYNTHIA_TO_TRAIN.values())
MAX_LABEL_ID = 22
_NOT_16 = {CLASS_NAMES.index(n) for n in ("terrain", "truck", "train")}
_NOT_13 = _NOT_16 | {CLASS_NAMES.index(n) for n in ("wall", "fence", "pole")}
EVAL_SUBSETS = {
    "mIoU16": [t for t in range(len(CLASS_NAMES)) if t not in _NOT_16],
    "mIoU13": [t for t in range(len(CLASS_NAMES)) if t not in _NOT_13],
}
LAYOUT = "RGB/*.png and GT/LABELS/*.png (same file names)"
PREPARE = (
    "Download SYNTHIA-RAND-CITYSCAPES (SYNTHIA_RAND_CITYSCAPES.rar) from "
    "https://synthia-dataset.net/downloads/, extract it and set data.root to its RAND_CITYSCAPES "
    "folder (the one holding RGB/ and GT/); see docs/datasets.md."
)


def split_of(stem: str) -> str:
    """``"val"`` for about one file in ten (``crc32(stem) % 10 == 0``), else ``"train"``."""
    return "val" if zlib.crc32(stem.encode()) % 10 == 0 else "train"


@register_dataset(
    "synthia",
    reference="Ros et al., The SYNTHIA Dataset, CVPR 2016 (SYNTHIA-RAND-CITYSCAPES subset)",
    splits=("train", "val", "all"),
    prepare=PREPARE,
)
class SynthiaDataset(StreetSceneDataset):
    """SYNTHIA-RAND-CITYSCAPES: 9,400 synthetic 1280×760 images, 19 Cityscapes classes (16 present).

    Synthia ids 0–22 are mapped to the 19 Cityscapes train ids. ``train`` and ``all`` are augmented
    by default; ``label_noise`` is a :mod:`datasets.noise` config.
    """

    class_names = CLASS_NAMES
    label_table = LABEL_TO_TRAIN
    max_label_id = MAX_LABEL_ID
    eval_subsets = EVAL_SUBSETS
    train_splits = ("train", "all")

    def __init__(
        self, root: Path, split: str, *, crop_size: Sequence[int] = (512, 512), **options: Any
    ) -> None:
        super().__init__(root, split, crop_size=crop_size, **options)

    @staticmethod
    def find(root: Path, split: str) -> list[tuple[str, Path, Path]]:
        """The ``(stem, image, label)`` triples of ``split`` under ``root``, checking the official layout."""
        image_dir, label_dir = root / "RGB", root / "GT" / "LABELS"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"synthia: expected folder {folder} (layout: {LAYOUT}). {PREPARE}")
        images = {p.stem: p for p in image_dir.glob("*.png") if split in ("all", split_of(p.stem))}
        labels = {p.stem: p for p in label_dir.glob("*.png") if split in ("all", split_of(p.stem))}
        if not images and not labels:
            raise FileNotFoundError(f"synthia {split!r} split is empty: no {image_dir}/*.png in it")
        return pair_files(images, labels, "synthia")

    def read_ids(self, path: Path) -> np.ndarray:
        data = read_png(path)
        if data.ndim != 3 or data.shape[2] not in (3, 4):
            raise ValueError(
                f"{path}: expected a 3-channel 16-bit SYNTHIA GT/LABELS PNG (class id in R); "
                f"got an array of shape {data.shape}"
            )
        return data[:, :, 2]
