"""losses.distance: exact EDTs against scipy, the empty/full-mask conventions, both CPU backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from losses import distance
from losses.distance import (
    border_distance,
    edt_batch,
    label_distance,
    signed_distance_maps,
    unsigned_distance_maps,
)

RNG = np.random.default_rng(0)


def scipy_edt(mask: np.ndarray, spacing=None) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=spacing)


def assert_close_to_scipy(masks: np.ndarray, spacing=None) -> None:
    ours = edt_batch(torch.from_numpy(masks), spacing).numpy()
    assert ours.dtype == np.float32
    for got, mask in zip(ours, masks, strict=True):
        np.testing.assert_allclose(got, scipy_edt(mask, spacing), atol=1e-4, rtol=0)


def voronoi(shape: tuple[int, ...], regions: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """A label map of ``regions`` Voronoi cells with random class ids."""
    seeds = rng.random((regions, len(shape))) * shape
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    nearest = ((grid[..., None, :] - seeds) ** 2).sum(-1).argmin(-1)
    return rng.integers(0, classes, regions)[nearest]


@pytest.fixture(params=["edt", "scipy"])
def backend(request, monkeypatch) -> str:
    """Run a test with the ``edt`` package and again with the scipy fallback."""
    if request.param == "scipy":
        monkeypatch.setattr(distance, "_edt_lib", None)
    return request.param


@pytest.mark.parametrize("density", [0.05, 0.5, 0.95])
def test_random_2d_masks_match_scipy(backend, density):
    assert_close_to_scipy(RNG.random((3, 37, 53)) < density)


def test_structured_masks_match_scipy(backend):
    masks = np.zeros((5, 32, 48), bool)
    masks[0, 5:20, 10:40] = True  # rectangle
    masks[1, :, 20] = True  # full-height line touching both borders
    masks[2, 16, 24] = True  # single pixel
    masks[3] = (np.indices((32, 48)).sum(0) % 2) == 0  # checkerboard
    masks[4] = True
    masks[4, 31, 47] = False  # one background pixel in a corner
    assert_close_to_scipy(masks)


@pytest.mark.parametrize("spacing", [(1.0, 2.5), (0.7, 0.3)])
def test_anisotropic_2d_spacing_matches_scipy_sampling(backend, spacing):
    assert_close_to_scipy(RNG.random((2, 30, 41)) < 0.6, spacing)


@pytest.mark.parametrize("spacing", [None, (3.0, 0.78, 0.78)])
def test_3d_masks_match_scipy(backend, spacing):
    masks = np.stack([voronoi((12, 20, 24), 6, 2, RNG) == 1 for _ in range(2)])
    assert_close_to_scipy(masks, spacing)


def test_empty_mask_gives_zeros():
    assert not edt_batch(torch.zeros(2, 9, 11, dtype=torch.bool)).any()


@pytest.mark.parametrize(("shape", "spacing"), [((7, 10), None), ((7, 10), (2.0, 0.5)), ((4, 6, 5), None)])
def test_full_mask_gives_distance_to_the_array_border(backend, shape, spacing):
    """As if the array were padded with background: scipy on the zero-padded mask is the oracle."""
    full = torch.ones(1, *shape, dtype=torch.bool)
    got = edt_batch(full, spacing)[0].numpy()
    padded = np.pad(np.ones(shape, bool), 1)
    expected = scipy_edt(padded, spacing)[tuple(slice(1, -1) for _ in shape)]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(border_distance(shape, spacing).numpy(), expected, atol=1e-5)


def test_label_distance_is_the_edt_of_each_pixels_own_label(backend):
    labels = np.stack([voronoi((40, 56), 12, 5, RNG) for _ in range(3)])
    labels[0, :6] = 255  # an ignore band is a label of its own
    labels[1, 10:14, 20:30] = -100  # so is a negative ignore value
    got = label_distance(torch.from_numpy(labels)).numpy()
    for img, lab in zip(got, labels, strict=True):
        expected = np.zeros(lab.shape)
        for value in np.unique(lab):
            m = lab == value
            expected[m] = scipy_edt(m)[m]
        np.testing.assert_allclose(img, expected, atol=1e-4)


def test_single_label_image_gives_border_distance(backend):
    labels = torch.full((2, 6, 9), 3)
    labels[1, 2, 2] = 0
    got = label_distance(labels)
    torch.testing.assert_close(got[0], border_distance((6, 9)))
    # with a second label present the border is no boundary: (0, 0) measures to (2, 2)
    assert got[1, 2, 2] == 1 and got[1, 2, 4] == 2
    assert got[1, 0, 0] == pytest.approx(8**0.5)


def kervadec_signed(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Transcription of Kervadec's ``one_hot2dist`` (classes absent from the image stay 0)."""
    out = np.zeros((num_classes, *labels.shape))
    for c in range(num_classes):
        pos = labels == c
        if pos.any():
            neg = ~pos
            out[c] = scipy_edt(neg) * neg - (scipy_edt(pos) - 1) * pos
    return out


def test_signed_maps_match_kervadec_one_hot2dist(backend):
    labels = np.stack([voronoi((36, 44), 10, 4, RNG) for _ in range(3)])
    labels[0][labels[0] == 3] = 1  # class 3 absent from image 0
    labels[2, -5:] = 255  # ignored pixels belong to no class
    got = signed_distance_maps(torch.from_numpy(labels), 5).numpy()  # class 4 absent everywhere
    for img, lab in zip(got, labels, strict=True):
        np.testing.assert_allclose(img, kervadec_signed(lab, 5), atol=1e-4)
    assert not got[0, 3].any() and not got[:, 4].any()


def test_unsigned_maps_are_zero_without_a_boundary_and_edt_sum_otherwise(backend):
    labels = np.stack([voronoi((30, 30), 8, 3, RNG), np.full((30, 30), 1)])
    got = unsigned_distance_maps(torch.from_numpy(labels), 4).numpy()
    for c in range(3):
        m = labels[0] == c
        expected = scipy_edt(m) + scipy_edt(~m) if m.any() else np.zeros(m.shape)
        np.testing.assert_allclose(got[0, c], expected, atol=1e-4)
    assert not got[0, 3].any(), "absent class"
    assert not got[1].any(), "class 1 fills image 1 (no boundary), the others are absent"


def test_bad_spacing_and_shape_are_rejected_by_name():
    with pytest.raises(ValueError, match="spacing"):
        edt_batch(torch.ones(1, 4, 4, dtype=torch.bool), spacing=(1.0,))
    with pytest.raises(ValueError, match="spacing"):
        edt_batch(torch.ones(1, 4, 4, dtype=torch.bool), spacing=(1.0, -2.0))
    with pytest.raises(ValueError, match="masks"):
        edt_batch(torch.ones(4, 4, dtype=torch.bool))
