"""Numpy augmentations on ``(image [C,H,W] float32, label [H,W] int)`` pairs.

Every random transform takes an explicit ``np.random.Generator`` so that augmentation is
reproducible per sample draw (see ``datasets.base``). Labels are always resampled with
nearest-neighbour interpolation and padded with ``ignore_index``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import IGNORE_INDEX


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    """Resize to ``size = (H, W)``: bicubic image, nearest label (TransUNet: zoom order 3 / 0)."""
    h, w = size
    if image.shape[-2:] == (h, w):
        return image, label
    img = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in image])
    if label is not None:
        label = cv2.resize(label.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return img.astype(np.float32, copy=False), label


def rot90_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """Random multiple of 90° rotation followed by a random flip along H or W (TransUNet)."""
    k = int(rng.integers(0, 4))
    axis = int(rng.integers(0, 2))
    image = np.flip(np.rot90(image, k, axes=(1, 2)), axis=axis + 1)
    label = np.flip(np.rot90(label, k), axis=axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def rotate(image: np.ndarray, label: np.ndarray, angle: float, fill_image: float = 0.0):
    """Rotate by ``angle`` degrees about the centre (bicubic image, nearest label, same size).

    Image borders are filled with ``fill_image``; label borders with 0 (background) as in TransUNet's
    ``ndimage.rotate(..., reshape=False)`` with constant mode.
    """
    h, w = label.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    img = np.stack(
        [
            cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_CUBIC, borderValue=fill_image)
            for c in image.astype(np.float32, copy=False)
        ]
    )
    lab = cv2.warpAffine(label.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    return img, lab


def hflip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, p: float = 0.5):
    """Horizontal flip with probability ``p``."""
    if rng.random() < p:
        return np.ascontiguousarray(image[:, :, ::-1]), np.ascontiguousarray(label[:, ::-1])
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray, size: tuple[int, int], fill_image: float = 0.0):
    """Pad bottom/right to at least ``size = (H, W)``; label padding is ``ignore_index``."""
    h, w = label.shape
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    image = np.pad(image, ((0, 0), (0, ph), (0, pw)), constant_values=fill_image)
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return image, label
