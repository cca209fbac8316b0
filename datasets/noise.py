"""Synthetic label noise for robustness studies: boundary shifts and class flips.

``apply_label_noise(label, rng, num_classes=C, type=..., rate=..., radius=...)`` returns a noisy copy of
a train-id map ``[H,W]``. Pixels equal to ``ignore_index`` are never changed, and no pixel becomes
ignored, so noise moves annotations between classes without changing what is annotated. All randomness
comes from ``rng`` (the per-draw generator of :mod:`datasets.base`), so the noise of every sample draw
is reproducible. A *region* is a connected set of pixels of one class (8-connectivity).

Types (``rate`` in [0, 1]; ``radius`` in pixels, ``boundary`` only):

- ``pixel``: each annotated pixel is flipped, with probability ``rate``, to a uniformly drawn other class.
- ``component``: each region is flipped as a whole, with probability ``rate``, to a uniformly drawn
  other class.
- ``boundary``: the regions are visited in random order and each is perturbed with probability
  ``rate``: with equal odds dilated (it takes over the annotated pixels within ``radius`` of it) or
  eroded (its pixels within ``radius`` of another region take the class of the nearest one). Each step
  acts on the result of the previous ones, like successive annotator edits; distances are Euclidean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from .labels import IGNORE_INDEX

NOISE_TYPES = ("pixel", "component", "boundary")
_EIGHT = np.ones((3, 3), bool)


def check_label_noise(cfg: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Validate a ``label_noise: {type, rate, radius}`` config; ``None`` or empty means no noise.

    Returns the normalised keyword arguments of :func:`apply_label_noise` (without ``num_classes``).
    """
    if not cfg:
        return None
    cfg = dict(cfg)
    kind, rate, radius = cfg.pop("type", None), cfg.pop("rate", None), cfg.pop("radius", None)
    if cfg:
        raise ValueError(f"label_noise: unknown key(s) {sorted(cfg)}; valid: type, rate, radius")
    if kind not in NOISE_TYPES:
        raise ValueError(f"label_noise.type must be one of {', '.join(NOISE_TYPES)}; got {kind!r}")
    if not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(f"label_noise.rate must be a number in [0, 1]; got {rate!r}")
    if kind != "boundary":
        if radius is not None:
            raise ValueError(f"label_noise.radius applies to type 'boundary' only, not {kind!r}")
        return {"type": kind, "rate": float(rate)}
    if not isinstance(radius, int) or radius < 1:
        raise ValueError(
            f"label_noise.radius must be an integer >= 1 (pixels) for 'boundary'; got {radius!r}"
        )
    return {"type": kind, "rate": float(rate), "radius": radius}


def apply_label_noise(
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    num_classes: int,
    type: str,
    rate: float,
    radius: int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """A noisy copy of ``label`` (train ids ``0..num_classes-1`` and ``ignore_index``), same dtype."""
    check_label_noise({"type": type, "rate": rate, "radius": radius})
    if num_classes < 2:
        raise ValueError(
            f"label noise needs at least 2 classes to flip between; got num_classes={num_classes}"
        )
    if type == "pixel":
        out = label.copy()
        flip = (label != ignore_index) & (rng.random(label.shape) < rate)
        out[flip] = (label[flip] + rng.integers(1, num_classes, int(flip.sum()))) % num_classes
        return out
    owner, classes = _regions(label, ignore_index)
    if type == "component":
        flip = np.flatnonzero(rng.random(len(classes) - 1) < rate) + 1
        classes[flip] = (classes[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
    else:
        _shift_boundaries(owner, rng, rate, radius)
    return classes[owner].astype(label.dtype)


def _regions(label: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Region ids ``owner [H,W]`` (0 = ignored, 1..N) and the class of each id (``classes[0]`` = ignore)."""
    owner = np.zeros(label.shape, np.int32)
    classes = [ignore_index]
    for c in np.flatnonzero(np.bincount(label.ravel())):
        if c == ignore_index:
            continue
        ids, n = ndimage.label(label == c, structure=_EIGHT)
        inside = ids > 0
        owner[inside] = ids[inside] + (len(classes) - 1)
        classes += [c] * n
    return owner, np.asarray(classes, np.int64)


def _shift_boundaries(owner: np.ndarray, rng: np.random.Generator, rate: float, radius: int) -> None:
    """Dilate or erode randomly chosen regions of ``owner`` in place (see the module docstring)."""
    n = int(owner.max())
    order = rng.permutation(n) + 1
    chosen = rng.random(n + 1) < rate
    dilate = rng.random(n + 1) < 0.5
    h, w = owner.shape
    # bounding box (y0, y1, x0, x1) that always contains region k: kept conservative as regions grow
    boxes = np.zeros((n + 1, 4), np.int64)
    for k, box in enumerate(ndimage.find_objects(owner), start=1):
        boxes[k] = box[0].start, box[0].stop, box[1].start, box[1].stop
    for k in order[chosen[order]]:
        y0, y1, x0, x1 = boxes[k]
        y0, y1, x0, x1 = max(y0 - radius, 0), min(y1 + radius, h), max(x0 - radius, 0), min(x1 + radius, w)
        win = owner[y0:y1, x0:x1]  # a view: edits go to owner
        mine = win == k
        others = (win != 0) & ~mine
        if not mine.any() or not others.any():
            continue
        if dilate[k]:
            win[others & (ndimage.distance_transform_edt(~mine) <= radius)] = k
            boxes[k] = y0, y1, x0, x1
        else:
            dist, (iy, ix) = ndimage.distance_transform_edt(~others, return_indices=True)
            shrink = mine & (dist <= radius)
            gained = win[iy[shrink], ix[shrink]]
            win[shrink] = gained
            for j in np.unique(gained):
                b = boxes[j]
                boxes[j] = min(b[0], y0), max(b[1], y1), min(b[2], x0), max(b[3], x1)
