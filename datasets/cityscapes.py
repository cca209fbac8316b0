"""Cityscapes fine annotations (19 train classes) in the official layout, and the street-scene pipeline.

Layout under ``root`` (the official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``
unzipped side by side)::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png    RGB, 2048×1024
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png     label ids 0–33, 8-bit

Label ids become the 19 train ids through the label table of ``cityscapesscripts`` (ids without a
train id → 255 = ignore); a value above 33 is an error naming the file, checked as each image is loaded.
The item ``case`` is the image stem ``{city}_{seq}_{frame}``. Evaluation is on whole images;
:func:`train_ids_to_label_ids` maps predictions back to label ids for the official evaluator.

:class:`StreetSceneDataset` holds the pipeline shared with Synthia: ImageNet-normalised RGB
``[3,H,W]``; training draws a random rescale ``s ~ U(scale)``, a random ``crop_size`` crop (label
padded with 255), a horizontal flip with probability ½ and optional label noise
(:mod:`datasets.noise`); every item is padded bottom/right to a multiple of 32 (the downsampling of
SMP encoders; label padding is 255, so metrics ignore it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CS_LABELS

from . import transforms as T
from .base import SegDataset
from .labels import IGNORE_INDEX
from .registry import register_dataset

_TRAIN = [lb for lb in CS_LABELS if lb.id >= 0 and 0 <= lb.trainId < IGNORE_INDEX]
CLASS_NAMES = tuple(lb.name for lb in sorted(_TRAIN, key=lambda lb: lb.trainId))
#: train id of each label id (256 entries; ids without a train id → 255)
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, np.uint8)
LABEL_TO_TRAIN[[lb.id for lb in _TRAIN]] = [lb.trainId for lb in _TRAIN]
#: label id of each train id (256 entries; 255 → 0 "unlabeled")
TRAIN_TO_LABEL = np.zeros(256, np.uint8)
TRAIN_TO_LABEL[[lb.trainId for lb in _TRAIN]] = [lb.id for lb in _TRAIN]
MAX_LABEL_ID = max(lb.id for lb in CS_LABELS)
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"
LAYOUT = f"leftImg8bit/{{split}}/{{city}}/*{IMAGE_SUFFIX} and gtFine/{{split}}/{{city}}/*{LABEL_SUFFIX}"
PREPARE = (
    "Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ (free registration) and unzip both into data.root; "
    "see docs/datasets.md."
)


def train_ids_to_label_ids(pred: np.ndarray) -> np.ndarray:
    """Map a train-id map (0–18; 255 → 0 "unlabeled") to Cityscapes label ids as ``uint8``."""
    bad = (pred < 0) | (pred >= len(CLASS_NAMES)) & (pred != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f"predicted train ids {np.unique(pred[bad])[:10].tolist()} are not in 0–18 or 255")
    return TRAIN_TO_LABEL[pred.astype(np.intp)]


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit colour image as ``uint8 [H,W,3]`` RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}: not a readable PNG/JPEG (corrupt or truncated file?)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_png(path: Path) -> np.ndarray:
    """A PNG as stored (any bit depth and channel count, cv2 channel order BGR(A))."""
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise OSError(f"cannot read label image {path}: not a readable PNG (corrupt or truncated file?)")
    return data


def pair_files(
    images: Mapping[str, Path], labels: Mapping[str, Path], dataset: str
) -> list[tuple[str, Path, Path]]:
    """``(key, image, label)`` for matching keys, sorted; unmatched files are an error that names them."""
    for missing, files, what in (
        (images.keys() - labels.keys(), images, "image(s) without a label file"),
        (labels.keys() - images.keys(), labels, "label file(s) without an image"),
    ):
        if missing:
            names = [str(files[k]) for k in sorted(missing)]
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            raise FileNotFoundError(f"{dataset}: {len(names)} {what}: {', '.join(names[:5])}{more}")
    return [(k, images[k], labels[k]) for k in sorted(images)]


def _pair(value: Sequence[float], name: str, cast: type) -> tuple:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a pair [a, b]; got {value!r}")
    return tuple(cast(v) for v in value)


class StreetSceneDataset(SegDataset):
    """Image/label PNG pairs with the street-scene pipeline (see the module docstring).

    Subclasses set ``class_names``, ``label_table`` (raw id → train id, 256 entries), ``max_label_id``
    and implement ``find`` (the ``(case, image, label)`` triples of a split under a root, checking the
    layout) and ``read_ids`` (a label file → raw ids ``[H,W]``).
    """

    label_table: np.ndarray
    max_label_id: int
    size_divisor = 32
    #: ``[H, W]``: a fixed resize of every split (bilinear image, nearest label), flips only
    resize: tuple[int, int] | None = None

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        crop_size: Sequence[int],
        scale: Sequence[float] = (0.5, 2.0),
        augment: bool | None = None,
        seed: int = 0,
        label_noise: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(split, augment=augment, seed=seed, label_noise=label_noise)
        self.pairs = self.find(Path(root), split)
        self.crop_size = _pair(crop_size, "crop_size", int)
        if min(self.crop_size) <= 0 or any(c % self.size_divisor for c in self.crop_size):
            raise ValueError(
                f"crop_size must be positive multiples of {self.size_divisor}; got {crop_size!r}"
            )
        self.scale = _pair(scale, "scale", float)
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be [min, max] with 0 < min <= max; got {scale!r}")

    @staticmethod
    def find(root: Path, split: str) -> list[tuple[str, Path, Path]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def case_of(self, idx: int) -> str:
        return self.pairs[idx][0]

    def read_ids(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def load(self, idx: int) -> dict[str, Any]:
        case, image_path, label_path = self.pairs[idx]
        rgb = read_rgb(image_path)
        ids = self.read_ids(label_path)
        if ids.shape != rgb.shape[:2]:
            raise ValueError(
                f"{label_path} is {ids.shape[::-1]} (W, H) but {image_path} is {rgb.shape[1::-1]}"
            )
        if ids.max() > self.max_label_id:
            bad = np.unique(ids[ids > self.max_label_id])[:10].tolist()
            raise ValueError(
                f"{label_path}: label values {bad} are outside the known ids 0–{self.max_label_id} of "
                f"{type(self).__name__}; is this the right label file?"
            )
        label = cv2.LUT(ids.astype(np.uint8, copy=False), self.label_table)  # ids < 256: checked above
        image = T.normalize(rgb)
        if self.resize is not None:
            image, label = T.resize(image, label, self.resize, bilinear=True)
        return {"image": image, "label": label, "case": case}

    def augment(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, label = sample["image"], sample["label"]
        if self.resize is None:  # with a fixed resize (the survey authors' setting) only flips
            image, label = T.random_scale_crop(image, label, rng, self.scale, self.crop_size)
        image, label = T.hflip(image, label, rng)
        return {**sample, "image": image, "label": label}

    def finalize(self, sample: dict[str, Any]) -> dict[str, Any]:
        image, label = T.pad_to_multiple(sample["image"], sample["label"], self.size_divisor)
        return {**sample, "image": image, "label": label}


@register_dataset(
    "cityscapes",
    reference="Cordts et al., The Cityscapes Dataset for Semantic Urban Scene Understanding, CVPR 2016",
    splits=("train", "val", "test"),
    prepare=PREPARE,
)
class CityscapesDataset(StreetSceneDataset):
    """Cityscapes fine: 19 classes, 2975 train / 500 val / 1525 test images of 2048×1024.

    Label ids 0–33 are mapped to the 19 train ids. ``label_noise`` is a :mod:`datasets.noise`
    config; ``resize: [H, W]`` resizes images (bilinear) and labels (nearest) of every split to a
    fixed size without keeping the aspect ratio and replaces rescale+crop by flips only (the survey
    authors' 512×512 setting; evaluation is then at that size).
    """

    class_names = CLASS_NAMES
    label_table = LABEL_TO_TRAIN
    max_label_id = MAX_LABEL_ID

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        crop_size: Sequence[int] = (512, 1024),
        resize: Sequence[int] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(root, split, crop_size=crop_size, **options)
        self.resize = None if resize is None else _pair(resize, "resize", int)

    @staticmethod
    def find(root: Path, split: str) -> list[tuple[str, Path, Path]]:
        """The ``(case, image, label)`` triples of ``split`` under ``root``, checking the official layout."""
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"cityscapes: expected folder {folder} (layout: {LAYOUT}). {PREPARE}")
        images = {p.name.removesuffix(IMAGE_SUFFIX): p for p in image_dir.glob(f"*/*{IMAGE_SUFFIX}")}
        labels = {p.name.removesuffix(LABEL_SUFFIX): p for p in label_dir.glob(f"*/*{LABEL_SUFFIX}")}
        if not images and not labels:
            raise FileNotFoundError(
                f"cityscapes {split!r} split is empty: no {image_dir}/{{city}}/*{IMAGE_SUFFIX}"
            )
        return pair_files(images, labels, "cityscapes")

    def read_ids(self, path: Path) -> np.ndarray:
        ids = read_png(path)
        if ids.ndim != 2:
            raise ValueError(
                f"{path}: expected a single-channel *{LABEL_SUFFIX} image, got {ids.shape[2]} channels "
                "(a *_gtFine_color.png?)"
            )
        return ids
