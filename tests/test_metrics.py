"""bench.metrics: HD95 equals medpy (and MONAI's directed value), overlaps, confusion matrices."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from bench import metrics
from bench.metrics import (
    boundary,
    confusion_matrix,
    diagonal,
    hd95,
    hd95_directed,
    measure_pair,
    scores_from_confusion,
)


def ellipsoid(shape, centre, radii):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((x - c) / r) ** 2 for x, c, r in zip(grid, centre, radii, strict=True)) <= 1


def blobs(rng, shape, density, grow):
    mask = rng.random(shape) < density
    return ndimage.binary_dilation(mask, iterations=grow) if grow else mask


def assert_medpy_equal(pred, gt, spacing, connectivity):
    expected = medpy_binary.hd95(pred, gt, voxelspacing=spacing, connectivity=connectivity)
    assert hd95(pred, gt, spacing, connectivity) == pytest.approx(expected, rel=1e-6, abs=0)


@pytest.fixture(params=["kdtree", "edt"])
def route(request, monkeypatch):
    """Force the nearest-distance route: KD-tree (sparse surfaces) or EDT (dense surfaces)."""
    monkeypatch.setattr(metrics, "DENSE", 0 if request.param == "kdtree" else 10**12)
    return request.param


SPACINGS = {2: (None, (1.0, 1.0), (0.7, 1.9)), 3: (None, (3.0, 0.78, 0.78), (0.5, 2.0, 1.3))}


@pytest.mark.parametrize(("ndim", "connectivity"), [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)])
def test_hd95_equals_medpy_on_random_blobs(ndim, connectivity, route):
    rng = np.random.default_rng(10 * ndim + connectivity)
    shape = (64, 80) if ndim == 2 else (18, 30, 26)
    for trial in range(6):
        pred = blobs(rng, shape, 0.01, grow=2)
        gt = blobs(rng, shape, 0.01, grow=1 + trial % 2)
        for spacing in SPACINGS[ndim]:
            assert_medpy_equal(pred, gt, spacing, connectivity)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_hd95_equals_medpy_on_noisy_masks(ndim, connectivity, route):
    rng = np.random.default_rng(ndim + connectivity)
    shape = (70, 90) if ndim == 2 else (16, 24, 20)
    pred, gt = rng.random(shape) < 0.4, rng.random(shape) < 0.2
    for spacing in SPACINGS[ndim]:
        assert_medpy_equal(pred, gt, spacing, connectivity)


@pytest.mark.parametrize("connectivity", [1, 3])
def test_hd95_equals_medpy_on_shifted_ellipsoids_with_a_false_positive(connectivity, route):
    shape = (30, 64, 64)
    gt = ellipsoid(shape, (15, 30, 32), (8, 18, 14))
    pred = ellipsoid(shape, (16, 31, 33), (9, 17, 15)) | ellipsoid(shape, (10, 55, 10), (2, 4, 4))
    for spacing in SPACINGS[3]:
        assert_medpy_equal(pred, gt, spacing, connectivity)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_hd95_equals_medpy_for_masks_touching_the_array_border(connectivity, route):
    shape = (40, 50)
    gt = np.zeros(shape, bool)
    gt[:12, :] = True  # whole top band: the array edge is its surface
    pred = np.zeros(shape, bool)
    pred[:15, 20:] = True
    pred[-3:, -4:] = True  # corner blob
    for spacing in SPACINGS[2]:
        assert_medpy_equal(pred, gt, spacing, connectivity)
    full = np.ones(shape, bool)  # a full mask is all edge, no interior surface
    assert_medpy_equal(full, gt, (0.7, 1.9), connectivity)


def test_hd95_equals_medpy_for_single_voxel_masks(route):
    shape = (9, 11, 13)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    a[2, 3, 4], b[7, 1, 12] = True, True
    for spacing in SPACINGS[3]:
        assert_medpy_equal(a, b, spacing, 1)
        assert_medpy_equal(a, a, spacing, 1)
    assert hd95(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(10**2 + 2**2 + 4**2))


@pytest.mark.parametrize(
    ("shape", "connectivity"), [((9, 13), 1), ((9, 13), 2), ((5, 7, 6), 1), ((5, 7, 6), 3)]
)
def test_boundary_gives_every_class_its_erosion_surface(shape, connectivity):
    labels = np.random.default_rng(len(shape) + connectivity).integers(0, 4, shape)
    structure = ndimage.generate_binary_structure(len(shape), connectivity)
    for c in range(4):
        mask = labels == c
        expected = mask ^ ndimage.binary_erosion(mask, structure=structure)
        np.testing.assert_array_equal(mask & boundary(labels, connectivity), expected)


def monai_directed_hd95(pred, gt, spacing):
    from monai.metrics import compute_hausdorff_distance

    as_batch = [torch.from_numpy(m)[None, None] for m in (pred, gt)]
    kwargs = {"include_background": True, "percentile": 95, "directed": True, "spacing": list(spacing)}
    return float(compute_hausdorff_distance(*as_batch, **kwargs))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI deprecates one of its own arguments
def test_hd95_directed_equals_monai_directed_percentile(route):
    rng = np.random.default_rng(5)
    shape = (20, 40, 36)
    for _ in range(4):
        pred, gt = blobs(rng, shape, 0.004, grow=2), blobs(rng, shape, 0.004, grow=3)
        spacing = tuple(rng.uniform(0.5, 3.0, 3))
        ours = hd95_directed(pred, gt, spacing, connectivity=1)
        monai = (monai_directed_hd95(pred, gt, spacing), monai_directed_hd95(gt, pred, spacing))
        assert ours == pytest.approx(monai, rel=1e-5)  # MONAI works in float32
        assert hd95(pred, gt, spacing) <= max(ours) + 1e-9  # pooled never exceeds max-of-directed


def test_every_hd_value_is_nan_when_a_mask_is_empty():
    mask, empty = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    for pred, gt in ((mask, empty), (empty, mask), (empty, empty)):
        assert math.isnan(hd95(pred, gt))
        assert all(math.isnan(v) for v in hd95_directed(pred, gt, (1.0, 2.0)))


def test_dsc_and_iou_match_medpy_and_follow_the_empty_rules():
    rng = np.random.default_rng(3)
    pred, gt = blobs(rng, (30, 40), 0.02, 2), blobs(rng, (30, 40), 0.02, 2)
    m = measure_pair(pred, gt)
    assert m.dsc == pytest.approx(medpy_binary.dc(pred, gt))
    assert m.iou == pytest.approx(medpy_binary.jc(pred, gt))
    empty = np.zeros_like(gt)
    assert (measure_pair(pred, empty).dsc, measure_pair(empty, gt).iou) == (0.0, 0.0)
    both = measure_pair(empty, empty)
    assert math.isnan(both.dsc) and math.isnan(both.iou)
    assert [measure_pair(a, b).empty for a, b in ((pred, gt), (empty, gt), (pred, empty))] == [
        "none",
        "pred",
        "gt",
    ]


def test_diagonal_is_spacing_aware():
    assert diagonal((3, 4)) == pytest.approx(5.0)
    assert diagonal((155, 240, 240)) == pytest.approx(373.13, abs=0.01)  # the BraTS penalty
    assert diagonal((2, 3, 4), (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(16 + 9 + 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: hd95(a, a[:-1]), "same shape"),
        (lambda a: hd95(a, a, spacing=(1.0,)), "spacing"),
        (lambda a: hd95(a, a, spacing=(1.0, -2.0)), "spacing"),
        (lambda a: hd95(a, a, connectivity=3), "connectivity"),
    ],
)
def test_bad_hd95_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.ones((4, 5), bool))


def numpy_confusion(pred, target, k, ignore):
    valid = target != ignore
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (target[valid], pred[valid]), 1)
    return cm


def test_confusion_matrix_equals_numpy_reference_and_drops_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    k = 5
    pred = torch.randint(0, k, (3, 17, 23), generator=gen)
    target = torch.randint(0, k, (3, 17, 23), generator=gen)
    target[:, :4] = 255
    cm = confusion_matrix(pred, target, k)
    assert cm.dtype == torch.int64 and cm.shape == (k, k)
    np.testing.assert_array_equal(cm.numpy(), numpy_confusion(pred.numpy(), target.numpy(), k, 255))
    assert int(cm.sum()) == int((target != 255).sum())


def test_confusion_matrix_honours_a_custom_ignore_index_and_accumulates_over_batches():
    gen = torch.Generator().manual_seed(1)
    k = 4
    pred = torch.randint(0, k, (4, 9, 9), generator=gen)
    target = torch.randint(0, k, (4, 9, 9), generator=gen)
    target[target == 3] = -1
    summed = confusion_matrix(pred[:2], target[:2], k, ignore_index=-1)
    summed += confusion_matrix(pred[2:], target[2:], k, ignore_index=-1)
    expected = numpy_confusion(pred.numpy(), target.numpy(), k, -1)
    np.testing.assert_array_equal(summed.numpy(), expected)
    assert expected[3].sum() == 0


def test_confusion_matrix_rejects_labels_outside_the_classes():
    pred = torch.tensor([[0, 1], [2, 3]])
    target = torch.tensor([[0, 255], [1, 1]])
    with pytest.raises(ValueError, match="pred holds value 3 outside"):
        confusion_matrix(pred, target, 3)
    with pytest.raises(ValueError, match="target holds value 7"):
        confusion_matrix(pred.clamp(max=2), torch.tensor([[0, 7], [1, 1]]), 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(pred, target[0], 3)


def test_scores_from_confusion_match_hand_computation():
    # rows GT, columns prediction; class 2 is absent from both GT and prediction
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    s = scores_from_confusion(cm)
    assert s["iou"][:2] == pytest.approx([5 / 8, 3 / 6])
    assert s["dice"][:2] == pytest.approx([10 / 13, 6 / 9])
    assert math.isnan(s["iou"][2]) and math.isnan(s["dice"][2])
    assert s["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert s["mdice"] == pytest.approx((10 / 13 + 6 / 9) / 2)
    assert s["pixel_acc"] == pytest.approx(8 / 11)
    assert all(type(v) is float for v in (s["miou"], s["mdice"], s["pixel_acc"], *s["iou"]))


def test_scores_of_an_empty_confusion_matrix_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert all(math.isnan(v) for v in (s["miou"], s["mdice"], s["pixel_acc"], *s["iou"]))
    with pytest.raises(ValueError, match="square"):
        scores_from_confusion(np.zeros((2, 3)))
