"""bench.metrics: HD95 and ASSD equal medpy, NSD equals MONAI, Boundary IoU equals a transcription of
the official definition; overlaps, confusion matrices."""

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
    assd,
    boundary,
    boundary_counts,
    boundary_iou,
    confusion_matrix,
    diagonal,
    hd95,
    hd95_directed,
    measure_pair,
    nsd,
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
    cm = confusion_matrix(pred, target, k, ignore_index=255)
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
        confusion_matrix(pred, target, 3, ignore_index=255)
    with pytest.raises(ValueError, match="target holds value 7"):
        confusion_matrix(pred.clamp(max=2), torch.tensor([[0, 7], [1, 1]]), 3, ignore_index=255)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(pred, target[0], 3, ignore_index=255)


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


# --- NSD (MONAI) and ASSD (medpy) ---------------------------------------------------------------------


def monai_nsd(pred, gt, tolerance, spacing):
    from monai.metrics import compute_surface_dice

    as_batch = [torch.from_numpy(m)[None, None] for m in (pred, gt)]
    kwargs = {"include_background": True, "spacing": None if spacing is None else list(spacing)}
    return float(compute_surface_dice(*as_batch, [tolerance], **kwargs))


def assert_monai_nsd_equal(pred, gt, spacing, tolerances):
    for tau in tolerances:
        assert nsd(pred, gt, tau, spacing) == pytest.approx(
            monai_nsd(pred, gt, tau, spacing), rel=1e-6, abs=0
        )


def assert_medpy_assd_equal(pred, gt, spacing, connectivity):
    expected = medpy_binary.assd(pred, gt, voxelspacing=spacing, connectivity=connectivity)
    assert assd(pred, gt, spacing, connectivity) == pytest.approx(expected, rel=1e-6, abs=0)


#: integer tolerances tie with many voxel distances (ties are decided in float32, as MONAI does)
TOLERANCES = (0.0, 1.0, 1.5, 2.0, 3.0, 4.7)


@pytest.mark.parametrize("ndim", [2, 3])
def test_nsd_equals_monai_on_random_blobs_with_anisotropic_spacing(ndim, route):
    rng = np.random.default_rng(40 + ndim)
    shape = (48, 60) if ndim == 2 else (14, 26, 22)
    for trial in range(3):
        pred = blobs(rng, shape, 0.01, grow=2)
        gt = blobs(rng, shape, 0.01, grow=1 + trial % 2)
        for spacing in SPACINGS[ndim]:
            assert_monai_nsd_equal(pred, gt, spacing, TOLERANCES)


def test_nsd_equals_monai_on_noisy_masks_and_shifted_ellipsoids(route):
    rng = np.random.default_rng(8)
    pred, gt = rng.random((40, 50)) < 0.4, rng.random((40, 50)) < 0.2
    assert_monai_nsd_equal(pred, gt, (0.7, 1.9), TOLERANCES)
    shape = (20, 40, 40)
    gt = ellipsoid(shape, (10, 20, 20), (6, 12, 9))
    pred = ellipsoid(shape, (11, 21, 20), (6, 11, 10)) | ellipsoid(shape, (4, 35, 5), (2, 3, 3))
    assert_monai_nsd_equal(pred, gt, (3.0, 0.78, 0.78), (0.5, 0.78, 1.0, 2.0, 3.0, 5.0))


def test_nsd_equals_monai_at_borders_and_on_single_voxels(route):
    gt = np.zeros((30, 40), bool)
    gt[:9, :] = True  # the array edge is its surface
    pred = np.zeros((30, 40), bool)
    pred[:11, 15:] = True
    pred[-2:, -3:] = True
    assert_monai_nsd_equal(pred, gt, (0.7, 1.9), TOLERANCES)
    assert_monai_nsd_equal(np.ones_like(gt), gt, None, TOLERANCES)
    a, b = np.zeros((9, 11, 13), bool), np.zeros((9, 11, 13), bool)
    a[2, 3, 4], b[3, 3, 5] = True, True
    assert_monai_nsd_equal(a, b, (2.0, 1.0, 0.5), (0.4, 0.5, 2.0, 2.1))
    assert nsd(a, b, 2.0, (2.0, 1.0, 0.5)) == 0.0  # sqrt(2² + 0.5²) > 2
    assert nsd(a, b, 2.1, (2.0, 1.0, 0.5)) == 1.0
    assert nsd(a, a, 0.0) == 1.0


def test_nsd_counts_every_surface_voxel_once():
    gt = np.zeros((12, 12), bool)
    gt[2:8, 2:8] = True  # 20 surface pixels
    pred = np.zeros_like(gt)
    pred[2:8, 2:10] = True  # 24 surface pixels, 16 of them on gt's surface
    # beyond 1 px: pred's (2,9), (7,9) and right column (3..6, 9) at 2; gt's (4,7), (5,7) at 2
    assert nsd(pred, gt, 1.0) == pytest.approx((44 - 6 - 2) / 44)
    assert nsd(pred, gt, 2.0) == 1.0


def test_nsd_and_assd_follow_the_empty_rules_of_monai_and_medpy():
    mask, empty = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    assert nsd(mask, empty, 1.0) == monai_nsd(mask, empty, 1.0, None) == 0.0
    assert nsd(empty, mask, 1.0) == monai_nsd(empty, mask, 1.0, None) == 0.0
    assert math.isnan(nsd(empty, empty, 1.0)) and math.isnan(monai_nsd(empty, empty, 1.0, None))
    for pred, gt in ((mask, empty), (empty, mask), (empty, empty)):
        assert math.isnan(assd(pred, gt))
        with pytest.raises(RuntimeError):
            medpy_binary.assd(pred, gt)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(mask, mask, -1.0)


@pytest.mark.parametrize(("ndim", "connectivity"), [(2, 1), (2, 2), (3, 1), (3, 3)])
def test_assd_equals_medpy(ndim, connectivity, route):
    rng = np.random.default_rng(60 + ndim + connectivity)
    shape = (50, 64) if ndim == 2 else (14, 24, 20)
    for _ in range(3):
        pred, gt = blobs(rng, shape, 0.01, grow=2), blobs(rng, shape, 0.01, grow=1)
        for spacing in SPACINGS[ndim]:
            assert_medpy_assd_equal(pred, gt, spacing, connectivity)
    noisy = rng.random(shape) < 0.3
    assert_medpy_assd_equal(noisy, gt, SPACINGS[ndim][-1], connectivity)
    edge = np.zeros(shape, bool)
    edge[(slice(0, 3),) * ndim] = True  # a corner block on the array border
    single = np.zeros(shape, bool)
    single[(-1,) * ndim] = True
    assert_medpy_assd_equal(edge, single, SPACINGS[ndim][-1], connectivity)
    assert_medpy_assd_equal(np.ones(shape, bool), gt, SPACINGS[ndim][-1], connectivity)


# --- Boundary IoU -------------------------------------------------------------------------------------
# Reference: the official definition transcribed from bowenc0221/boundary-iou-api
# (boundary_iou/utils/boundary_utils.py::mask_to_boundary and coco_panoptic_api/evaluation.py):
# d = max(1, round(ratio × diagonal)); pad the mask with one zero pixel, erode d times with a 3×3
# kernel (cv2), crop; boundary = mask − erosion; the predicted boundary on VOID leaves the union.


def official_boundary(mask, ratio):
    import cv2

    h, w = mask.shape
    d = max(1, round(ratio * math.sqrt(h * h + w * w)))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return (mask.astype(np.uint8) - eroded) > 0


def nd_boundary(mask, ratio):
    """The same definition in n-D with scipy: erode d times by the full 3^n cube, outside = 0."""
    d = max(1, round(ratio * math.sqrt(sum(s * s for s in mask.shape))))
    cube = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, cube, iterations=d, border_value=0)


def reference_counts(pred, gt, c, ratio, void=None, find=official_boundary):
    pb, gb = find(pred == c, ratio), find(gt == c, ratio)
    inter = int((pb & gb).sum())
    union = int(pb.sum()) + int(gb.sum()) - inter
    if void is not None:
        union -= int((pb & (gt == void)).sum())
    return inter, union


@pytest.mark.parametrize("ratio", [0.001, 0.02, 0.05, 0.1])
def test_boundary_iou_of_binary_masks_equals_the_official_definition(ratio):
    rng = np.random.default_rng(int(ratio * 1000))
    for shape in ((40, 56), (33, 90)):
        for grow in (0, 2, 4):
            pred, gt = blobs(rng, shape, 0.01, grow), blobs(rng, shape, 0.01, grow + 1)
            inter, union = reference_counts(pred, gt, True, ratio)
            assert boundary_iou(pred, gt, ratio) == pytest.approx(inter / union)
            assert boundary_counts(pred.view(np.uint8), gt.view(np.uint8), [1], ratio)[1] == (inter, union)


def test_boundary_iou_at_borders_single_pixels_and_empty_masks():
    shape = (30, 40)
    full, band, dot, empty = (np.zeros(shape, bool) for _ in range(4))
    full[:] = True
    band[:6, :] = True
    dot[10, 12] = True
    for pred, gt in ((full, band), (band, dot), (dot, dot), (full, full), (dot, empty), (empty, band)):
        inter, union = reference_counts(pred, gt, True, 0.05)
        assert boundary_iou(pred, gt, 0.05) == pytest.approx(inter / union)
    assert boundary_iou(full, full, 0.05) == 1.0  # a full image is all boundary near the edge
    assert boundary_iou(dot, empty) == 0.0
    assert math.isnan(boundary_iou(empty, empty))


def test_boundary_iou_per_class_of_label_maps_with_ignored_pixels():
    rng = np.random.default_rng(2)
    gt = np.kron(rng.integers(0, 4, (5, 7)), np.ones((9, 11), np.int64))  # blocky regions, 45x77
    pred = np.where(rng.random(gt.shape) < 0.95, gt, rng.integers(0, 4, gt.shape))
    gt[35:, 50:] = 255
    got = boundary_iou(pred, gt, 0.03, ignore_index=255)
    assert sorted(got) == [0, 1, 2, 3]
    for c, value in got.items():
        inter, union = reference_counts(pred, gt, c, 0.03, void=255)
        assert value == pytest.approx(inter / union)
    # without the VOID rule the predicted boundary inside the ignored block would enlarge the union
    assert any(
        reference_counts(pred, gt, c, 0.03) != reference_counts(pred, gt, c, 0.03, void=255) for c in range(4)
    )


def test_dataset_level_boundary_iou_sums_counts_over_images_before_dividing():
    rng = np.random.default_rng(4)
    images = [
        (
            rng.integers(0, 3, (6, 8)).repeat(5, 0).repeat(5, 1),
            rng.integers(0, 3, (6, 8)).repeat(5, 0).repeat(5, 1),
        )
        for _ in range(3)
    ]
    totals = np.zeros((3, 2))
    for pred, gt in images:
        counts = boundary_counts(pred, gt, [0, 1, 2], 0.02)
        totals += [counts[c] for c in range(3)]
        assert [counts[c] for c in range(3)] == [reference_counts(pred, gt, c, 0.02) for c in range(3)]
    per_image = [boundary_iou(p, g, 0.02, classes=[0]) for p, g in images]
    dataset = totals[0, 0] / totals[0, 1]
    assert dataset != pytest.approx(np.mean([v[0] for v in per_image]))  # not a mean of image values


def test_boundary_iou_is_the_same_for_label_ids_beyond_the_fast_16_bit_path():
    rng = np.random.default_rng(6)
    gt = rng.integers(0, 3, (5, 7)).repeat(6, 0).repeat(6, 1)
    pred = np.where(rng.random(gt.shape) < 0.9, gt, rng.integers(0, 3, gt.shape))
    small = boundary_counts(pred, gt, [0, 1, 2], 0.05)
    big = boundary_counts(pred + 70_000, gt + 70_000, [70_000, 70_001, 70_002], 0.05)  # scipy filters
    assert (
        list(big.values()) == list(small.values()) == [reference_counts(pred, gt, c, 0.05) for c in range(3)]
    )


def test_boundary_iou_of_volumes_uses_the_cube_and_the_nd_diagonal():
    rng = np.random.default_rng(5)
    shape = (12, 20, 18)
    pred, gt = blobs(rng, shape, 0.01, 2), blobs(rng, shape, 0.01, 1)
    for ratio in (0.03, 0.08):
        inter, union = reference_counts(pred, gt, True, ratio, find=nd_boundary)
        assert boundary_iou(pred, gt, ratio) == pytest.approx(inter / union)


def test_bad_boundary_iou_input_gets_a_clear_error():
    a = np.ones((4, 5), bool)
    with pytest.raises(ValueError, match="dilation_ratio"):
        boundary_iou(a, a, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        boundary_iou(a, a[:-1])
