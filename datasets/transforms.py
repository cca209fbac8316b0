"""Numpy augmentations on ``(image [C,H,W] float32, label [H,W] int)`` pairs.

Every random transform takes an explicit ``np.random.Generator`` so that augmentation is
reproducible per sample draw (see ``datasets.base``). Labels are always resampled with
nearest-neighbour interpolation and padded with ``ignore_index``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .labels import IGNORE_INDEX


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int], bilinear: bool = False):
    """Resize to ``size = (H, W)``: bicubic (or bilinear) image, nearest label (TransUNet: order 3 / 0)."""
    h, w = size
    if image.shape[-2:] == (h, w):
        return image, label
    interp = cv2.INTER_LINEAR if bilinear else cv2.INTER_CUBIC
    img = np.stack([cv2.resize(c, (w, h), interpolation=interp) for c in image])
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


def rotate(image: np.ndarray, label: np.ndarray, angle: float, fill_image: float = 0.0, fill_label: int = 0):
    """Rotate by ``angle`` degrees about the centre (bicubic image, nearest label, same size).

    Image borders are filled with ``fill_image``; label borders with ``fill_label`` (0, background, as
    in TransUNet's ``ndimage.rotate(..., reshape=False)`` with constant mode).
    """
    h, w = label.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
    img = np.stack(
        [
            cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_CUBIC, borderValue=fill_image)
            for c in image.astype(np.float32, copy=False)
        ]
    )
    lab = cv2.warpAffine(label.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=fill_label)
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


#: ImageNet statistics of RGB images in [0, 1] (the normalisation of ImageNet-pretrained encoders)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(rgb: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """``uint8 [H,W,3]`` RGB → float32 ``[3,H,W]`` with ``(x / 255 - mean) / std`` per channel."""
    scale = np.float32(1 / 255) / np.asarray(std, np.float32)
    shift = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    out = np.empty((3, *rgb.shape[:2]), np.float32)
    for c, plane in enumerate(cv2.split(rgb)):  # contiguous planes, not strided channel views
        out[c] = plane
        out[c] *= scale[c]
        out[c] -= shift[c]
    return out


def _scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(int(h * scale + 0.5), 1), max(int(w * scale + 0.5), 1)


def scale_crop(
    image: np.ndarray,
    label: np.ndarray,
    scale: float,
    offset: tuple[int, int],
    size: tuple[int, int],
    fill_image: float = 0.0,
):
    """Rescale by ``scale``, pad bottom/right to ``size`` and crop ``size = (H, W)`` at ``offset = (y, x)``.

    The image equals bilinear ``cv2.resize`` to ``round(scale·(H, W))`` → :func:`pad_to` → crop; the
    label takes the nearest source pixel, ``floor((dst + 0.5) / scale)``. Both are computed as one
    affine warp of the original, so the cost is that of the crop, not of the rescaled image. Pixels
    outside the rescaled image get ``fill_image`` / ``ignore_index``.
    """
    h, w = label.shape
    sh, sw = _scaled_size(h, w, scale)
    (y0, x0), (ch, cw) = offset, size
    # pixel centres map as dst + 0.5 = f · (src + 0.5) - offset, the convention of cv2.resize
    fy, fx = sh / h, sw / w
    m = np.array([[fx, 0, 0.5 * fx - 0.5 - x0], [0, fy, 0.5 * fy - 0.5 - y0]])
    border = {"borderMode": cv2.BORDER_REPLICATE}
    img = np.stack(
        [
            cv2.warpAffine(c, m, (cw, ch), flags=cv2.INTER_LINEAR, **border)
            for c in image.astype(np.float32, copy=False)
        ]
    )
    tie = np.array([[0, 0, fx], [0, 0, fy]]) / 64  # nudge exact ties (e.g. scale ½) to the larger index
    lab = cv2.warpAffine(
        label.astype(np.uint8, copy=False), m - tie, (cw, ch), flags=cv2.INTER_NEAREST, **border
    )
    inside_h, inside_w = max(sh - y0, 0), max(sw - x0, 0)
    img[:, inside_h:] = fill_image
    img[:, :, inside_w:] = fill_image
    lab[inside_h:] = IGNORE_INDEX
    lab[:, inside_w:] = IGNORE_INDEX
    return img, lab


def random_scale_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float],
    size: tuple[int, int],
    fill_image: float = 0.0,
):
    """Random rescale by ``s ~ U(scale)`` then a uniformly placed ``size`` crop (see :func:`scale_crop`).

    Where the rescaled image is smaller than the crop, the crop starts at 0 and the rest is padding.
    """
    s = float(rng.uniform(*scale))
    sh, sw = _scaled_size(*label.shape, s)
    y0 = int(rng.integers(0, max(sh - size[0], 0) + 1))
    x0 = int(rng.integers(0, max(sw - size[1], 0) + 1))
    return scale_crop(image, label, s, (y0, x0), size, fill_image)


def pad_to_multiple(image: np.ndarray, label: np.ndarray, divisor: int, fill_image: float = 0.0):
    """Pad bottom/right so that H and W are multiples of ``divisor`` (label padding is ``ignore_index``)."""
    h, w = label.shape
    return pad_to(image, label, (-(-h // divisor) * divisor, -(-w // divisor) * divisor), fill_image)
