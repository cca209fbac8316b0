"""Segmentation metrics: DSC, IoU, exact fast HD95 (medpy), NSD (MONAI), ASSD (medpy), Boundary IoU
(Cheng et al.) and confusion matrices.

Conventions
- Masks are boolean NumPy arrays of one case (2D image or 3D volume ``[D,H,W]``), pred and gt of the
  same shape. ``spacing`` is the physical size of a voxel along each *array axis* (``(z, y, x)`` for a
  volume, in mm); ``None`` means 1, i.e. distances in pixels/voxels.
- Surface of a mask: ``mask XOR binary_erosion(mask, generate_binary_structure(ndim, connectivity))``
  with border value 0, so mask voxels on the array edge are surface (medpy's rule).
- HD95: the 95th percentile (NumPy, linear interpolation) of the *pooled* distances from every surface
  voxel of each mask to the nearest surface voxel of the other, both directions together; equal to
  ``medpy.metric.binary.hd95``. The directed percentiles (pred→gt, gt→pred) give the max-of-directed
  (MONAI-style) value.
- NSD (normalised surface distance, surface Dice at tolerance τ; Nikolov et al. 2021, Metrics
  Reloaded): the fraction of surface voxels of both masks lying within τ of the other surface, from
  the same directed distances as HD95; equal to MONAI's ``compute_surface_dice`` (see :func:`nsd`).
- ASSD: the mean of the pooled distances of both directions (every surface voxel of either mask to
  the other surface), equal to ``medpy.metric.binary.assd`` (0.5.x; medpy ≤ 0.4 averaged the two
  directed means instead, which weights the smaller surface more).
- Empty masks: every HD value and ASSD are NaN when either mask is empty; DSC, IoU and NSD are NaN
  when both are empty and 0 when exactly one is. The evaluation protocol (``bench.protocols``)
  applies its policy.
- Boundary IoU (:func:`boundary_iou`, :func:`boundary_counts`): its own boundary regions (a band of
  width d inside each mask, not the one-voxel surface above); defined on 2D images, and applied to
  an n-D array with a cube and the n-D diagonal.

Speed without changing a value (``measure_classes``): all work is confined to the bounding box of the
evaluated classes in pred ∪ gt. No margin is needed: outside the box no mask has a voxel, so a mask
voxel on the box edge is surface either way, and voxels on the array edge stay on the box edge. One
``boundary`` map per label array gives the surfaces of all classes at once (no per-class erosion).
Nearest surface distances come from a KD-tree over the surface voxels (float64, exact), or, when the
surfaces fill more than 1/DENSE of their bounding box (noisy masks), from the ``edt`` package's EDT of
that box (float32, relative error < 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import edt
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree
from torch import Tensor

Box = tuple[slice, ...]

#: surfaces filling more than 1/DENSE of their box use an EDT, not a KD-tree (measured break-even)
DENSE = 8


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """``spacing`` as a float64 array of ``ndim`` positive finite values (ones when ``None``)."""
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != ndim or not np.all(np.isfinite(sp) & (sp > 0)):
        raise ValueError(
            f"spacing must hold one positive finite value per array axis ({ndim}), got {tuple(spacing)}"
        )
    return sp


def check_pair(pred: np.ndarray, gt: np.ndarray, connectivity: int) -> None:
    """Raise a clear error unless pred/gt have the same shape and ``connectivity`` suits their rank."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same shape, got {pred.shape} and {gt.shape}")
    if not 1 <= connectivity <= pred.ndim:
        raise ValueError(f"connectivity must be between 1 and ndim={pred.ndim}, got {connectivity}")


def diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length of the array's diagonal in the units of ``spacing`` (voxels when ``None``)."""
    return float(np.sqrt(np.sum((np.asarray(shape) * check_spacing(spacing, len(shape))) ** 2)))


def mask_box(mask: np.ndarray) -> Box | None:
    """Bounding box of a boolean mask's True voxels (``None`` when empty), from axis projections."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hits.size:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def label_boxes(labels: np.ndarray, classes: Sequence[int]) -> dict[int, Box | None]:
    """Bounding box of each class of an integer label array (``None`` when absent).

    One pass over the array for all classes ≥ 1; class 0 (if asked for) takes one more.
    """
    boxes = ndimage.find_objects(labels, max_label=max(classes))
    zero = mask_box(labels == 0) if 0 in classes else None
    return {c: (boxes[c - 1] if c > 0 else zero) for c in classes}


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box holding both boxes (``None`` only when both are)."""
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def boundary(labels: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Voxels whose neighbourhood leaves the array or holds another label.

    For every class c, ``(labels == c) & boundary(labels)`` is medpy's surface of ``labels == c``:
    ``mask XOR binary_erosion(mask, generate_binary_structure(ndim, connectivity))`` with border 0.
    One comparison per pair of opposite neighbours, for all classes at once.
    """
    out = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):  # an edge voxel's face neighbour lies outside the array
        out[(slice(None),) * axis + (0,)] = True
        out[(slice(None),) * axis + (-1,)] = True
    neighbours = np.argwhere(ndimage.generate_binary_structure(labels.ndim, connectivity)) - 1
    for offset in neighbours.tolist():
        if not any(offset) or next(o for o in offset if o) < 0:
            continue  # the centre, and the opposite of a neighbour already compared
        here = tuple(slice(None, -1) if o > 0 else slice(1, None) if o < 0 else slice(None) for o in offset)
        there = tuple(slice(1, None) if o > 0 else slice(None, -1) if o < 0 else slice(None) for o in offset)
        differs = labels[here] != labels[there]
        out[here] |= differs
        out[there] |= differs
    return out


@dataclass(frozen=True)
class PairMetrics:
    """Voxel counts and directed surface distances of one (pred, gt) mask pair."""

    pred_voxels: int
    gt_voxels: int
    overlap: int
    #: distance of each pred surface voxel to the nearest gt surface voxel, in no particular order
    #: (empty if a mask is empty)
    pred_to_gt: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: distance of each gt surface voxel to the nearest pred surface voxel, in no particular order
    gt_to_pred: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def empty(self) -> str:
        """Which mask is empty: ``"none"``, ``"both"``, ``"pred"`` or ``"gt"``."""
        return {(True, True): "none", (False, False): "both", (False, True): "pred", (True, False): "gt"}[
            (self.pred_voxels > 0, self.gt_voxels > 0)
        ]

    @property
    def dsc(self) -> float:
        """Dice ``2|P∩G| / (|P|+|G|)``; NaN when both masks are empty."""
        total = self.pred_voxels + self.gt_voxels
        return 2.0 * self.overlap / total if total else float("nan")

    @property
    def iou(self) -> float:
        """Jaccard ``|P∩G| / |P∪G|``; NaN when both masks are empty."""
        union = self.pred_voxels + self.gt_voxels - self.overlap
        return self.overlap / union if union else float("nan")

    @property
    def hd95(self) -> float:
        """Pooled 95th percentile of both directions (medpy ``hd95``); NaN if a mask is empty."""
        if self.empty != "none":
            return float("nan")
        return float(np.percentile(np.concatenate([self.pred_to_gt, self.gt_to_pred]), 95))

    @property
    def hd95_directed(self) -> tuple[float, float]:
        """(pred→gt, gt→pred) 95th percentiles; NaN if a mask is empty."""
        if self.empty != "none":
            return float("nan"), float("nan")
        return float(np.percentile(self.pred_to_gt, 95)), float(np.percentile(self.gt_to_pred, 95))

    @property
    def assd(self) -> float:
        """Mean of both directions' pooled distances (medpy ``assd``); NaN if a mask is empty."""
        if self.empty != "none":
            return float("nan")
        total = self.pred_to_gt.sum() + self.gt_to_pred.sum()
        return float(total / (len(self.pred_to_gt) + len(self.gt_to_pred)))

    def nsd(self, tolerance: float) -> float:
        """Fraction of both surfaces within ``tolerance`` of the other (MONAI ``compute_surface_dice``).

        Distances and ``tolerance`` are compared in float32, as MONAI does. NaN when both masks are
        empty, 0 when exactly one is (MONAI's values).
        """
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"NSD tolerance must be a finite number >= 0, got {tolerance}")
        if self.empty == "both":
            return float("nan")
        if self.empty != "none":
            return 0.0
        tau = np.float32(tolerance)
        within = sum(
            int(np.count_nonzero(d.astype(np.float32) <= tau)) for d in (self.pred_to_gt, self.gt_to_pred)
        )
        return within / (len(self.pred_to_gt) + len(self.gt_to_pred))


def measure_classes(
    pred: np.ndarray,
    gt: np.ndarray,
    classes: Sequence[int],
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
    ignore_index: int | None = None,
) -> dict[int, PairMetrics]:
    """``PairMetrics`` of ``pred == c`` vs ``gt == c`` for each class c of two label arrays.

    Labels are non-negative integers; voxels where ``gt == ignore_index`` (a non-negative label that
    is no class) are left out of both masks. Work is confined to the union box of the classes in
    pred ∪ gt, and the surfaces of all classes come from one ``boundary`` map per array, so each
    class's surfaces are found once per case.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    check_pair(pred, gt, connectivity)
    sp = check_spacing(spacing, gt.ndim)
    classes = [int(c) for c in classes]
    ignorable = [] if ignore_index is None else [ignore_index]
    pred_boxes, gt_boxes = label_boxes(pred, classes), label_boxes(gt, classes + ignorable)
    box = None
    for c in classes:
        box = union_box(box, union_box(pred_boxes[c], gt_boxes[c]))
    if box is None:
        return {c: PairMetrics(0, 0, 0) for c in classes}
    p, g = compact(pred[box], "pred"), compact(gt[box], "gt")
    if ignorable and gt_boxes[ignore_index] is not None:
        p = np.where(g == ignore_index, g, p)  # an ignored voxel takes a label that is no class
    p_bnd, g_bnd = boundary(p, connectivity), boundary(g, connectivity)
    p_idx, g_idx = np.nonzero(p_bnd), np.nonzero(g_bnd)
    p_lab, g_lab = p[p_idx], g[g_idx]
    # a voxel on both surfaces of one class is 0 away from the other surface
    p_shared, g_shared = g_bnd[p_idx] & (g[p_idx] == p_lab), p_bnd[g_idx] & (p[g_idx] == g_lab)
    p_pts, g_pts = np.stack(p_idx, axis=1), np.stack(g_idx, axis=1)

    out = {}
    for c in classes:
        class_box = union_box(pred_boxes[c], gt_boxes[c])
        if class_box is None:
            out[c] = PairMetrics(0, 0, 0)
            continue
        inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(class_box, box, strict=True))
        pm, gm = p[inner] == c, g[inner] == c
        counts = np.count_nonzero(pm), np.count_nonzero(gm), np.count_nonzero(pm & gm)
        if not (counts[0] and counts[1]):
            out[c] = PairMetrics(*counts)
            continue
        in_p, in_g = p_lab == c, g_lab == c
        distances = surface_distances(p_pts[in_p], g_pts[in_g], p_shared[in_p], g_shared[in_g], sp)
        out[c] = PairMetrics(*counts, *distances)
    return out


def compact(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels as uint8 when they fit, for faster passes; non-negative labels are required."""
    if labels.dtype == np.uint8:
        return labels
    if labels.min() < 0:
        raise ValueError(f"{name} labels must be non-negative, got {labels.min()}")
    return labels.astype(np.uint8) if labels.max() <= 255 else labels


def surface_distances(
    pred_points: np.ndarray,
    gt_points: np.ndarray,
    pred_shared: np.ndarray,
    gt_shared: np.ndarray,
    spacing: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed nearest distances between two non-empty surfaces: pred→gt and gt→pred, in no order.

    Points are voxel indices ``[S, ndim]``; ``*_shared`` flags the points on both surfaces (distance 0).
    KD-tree over the points (exact), or, when the surfaces fill more than 1/DENSE of their bounding
    box, the ``edt`` package's EDT over that box (float32).
    """
    lo = np.minimum(pred_points.min(0), gt_points.min(0))
    shape = tuple(np.maximum(pred_points.max(0), gt_points.max(0)) - lo + 1)
    if (len(pred_points) + len(gt_points)) * DENSE > np.prod(shape):
        masks = []
        for pts in (pred_points, gt_points):
            mask = np.zeros(shape, bool)
            mask[tuple((pts - lo).T)] = True
            masks.append(mask)
        ps, gs = masks
        aniso = tuple(spacing.tolist())
        to_gt = edt.edt(~gs, anisotropy=aniso, black_border=False, parallel=1)[ps]
        to_pred = edt.edt(~ps, anisotropy=aniso, black_border=False, parallel=1)[gs]
        return to_gt.astype(np.float64), to_pred.astype(np.float64)
    p, g = pred_points * spacing, gt_points * spacing
    return _nearest(g, p[~pred_shared], len(p)), _nearest(p, g[~gt_shared], len(g))


def _nearest(targets: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """Distance of each query to its nearest target, padded with zeros to ``n`` values."""
    tree = cKDTree(targets, leafsize=64, balanced_tree=False, compact_nodes=False)
    return np.concatenate([np.zeros(n - len(queries)), tree.query(queries, workers=1)[0]])


def measure_pair(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> PairMetrics:
    """``PairMetrics`` of two boolean masks (computed inside their union box)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    check_pair(pred, gt, connectivity)
    box = union_box(mask_box(pred), mask_box(gt))
    if box is None:
        return PairMetrics(0, 0, 0)
    return measure_classes(pred[box].view(np.uint8), gt[box].view(np.uint8), [1], spacing, connectivity)[1]


def hd95(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> float:
    """medpy-definition HD95 of two boolean masks in units of ``spacing``; NaN if either is empty."""
    return measure_pair(pred, gt, spacing, connectivity).hd95


def hd95_directed(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> tuple[float, float]:
    """(pred→gt, gt→pred) 95th percentiles of surface distances; NaN if either mask is empty.

    ``max`` of the pair is MONAI's ``compute_hausdorff_distance(percentile=95)`` (connectivity 1).
    """
    return measure_pair(pred, gt, spacing, connectivity).hd95_directed


def nsd(
    pred: np.ndarray,
    gt: np.ndarray,
    tolerance: float,
    spacing: Sequence[float] | None = None,
    connectivity: int = 1,
) -> float:
    """Normalised surface distance (surface Dice) of two boolean masks at ``tolerance`` (spacing units).

    ``(|{p ∈ S_P : d(p, S_G) ≤ τ}| + |{g ∈ S_G : d(g, S_P) ≤ τ}|) / (|S_P| + |S_G|)``, where S_P, S_G
    are the surface voxels (module conventions; connectivity 1 is MONAI's ``binary_erosion``
    default) and d the Euclidean distance between voxel centres in units of ``spacing``. This is
    MONAI's ``compute_surface_dice(use_subvoxels=False)``: every surface voxel counts once. DeepMind's
    ``surface_distance.compute_surface_dice_at_tolerance`` (Nikolov et al. 2021), which MONAI follows
    with ``use_subvoxels=True``, instead places the surface on voxel corners (half a voxel out) and
    weights each surface element by its area (3D) or length (2D) in mm, so the two differ by a fraction
    of a voxel's worth of surface, most on coarse or anisotropic grids. NaN when both masks are empty,
    0 when exactly one is (MONAI's values).
    """
    return measure_pair(pred, gt, spacing, connectivity).nsd(tolerance)


def assd(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> float:
    """Average symmetric surface distance of two boolean masks (``medpy.metric.binary.assd``).

    ``(Σ d(S_P → S_G) + Σ d(S_G → S_P)) / (|S_P| + |S_G|)``: the mean over the surface voxels of
    both masks of the distance to the other surface, in units of ``spacing`` (medpy 0.5's pooled
    mean). NaN if either mask is empty (medpy raises).
    """
    return measure_pair(pred, gt, spacing, connectivity).assd


# --- Boundary IoU ------------------------------------------------------------------------------------


def dilation_width(shape: Sequence[int], dilation_ratio: float) -> int:
    """Boundary width d of Boundary IoU: ``max(1, round(ratio × image diagonal))`` pixels."""
    if not (math.isfinite(dilation_ratio) and dilation_ratio > 0):
        raise ValueError(f"Boundary IoU dilation_ratio must be a number > 0, got {dilation_ratio}")
    return max(1, round(dilation_ratio * diagonal(shape)))


def _uniform_windows(labels: np.ndarray, width: int) -> np.ndarray:
    """True where the cube of half-width ``width`` around a voxel lies inside the array and holds a
    single label: the union over labels of each label mask's erosion by that cube."""
    size = 2 * width + 1
    if labels.ndim == 2 and labels.max(initial=0) < 65535:  # OpenCV's min/max filters: ~3x scipy's
        shifted = labels.astype(np.uint16) + 1  # 0 = outside the image
        square = np.ones((size, size), np.uint8)
        low = cv2.erode(shifted, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        high = cv2.dilate(shifted, square, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return (low == high) & (low > 0)
    wide = labels.astype(np.int64)
    low = ndimage.minimum_filter(wide, size=size, mode="constant", cval=-1)
    high = ndimage.maximum_filter(wide, size=size, mode="constant", cval=-1)
    return (low == high) & (low >= 0)


def boundary_counts(
    pred: np.ndarray,
    gt: np.ndarray,
    classes: Sequence[int],
    dilation_ratio: float = 0.02,
    ignore_index: int | None = None,
) -> dict[int, tuple[int, int]]:
    """Boundary IoU's (intersection, union) pixel counts of each class of two label images.

    The boundary region of a mask is the mask minus its erosion by a (2d+1)² square — ``d``
    iterations of a 3×3 erosion, with pixels outside the image counting as background, so a mask cut
    by the image edge has a boundary there; d = :func:`dilation_width` (the official
    ``mask_to_boundary``). Pixels where ``gt == ignore_index`` are no class in gt; the prediction's
    boundary is found on the full prediction and its pixels on ignored gt are left out of the union,
    as the official panoptic evaluation subtracts the predicted boundary on VOID. Sum the counts over
    images for the dataset-level Boundary IoU (:func:`boundary_iou_from_counts`).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    check_pair(pred, gt, 1)
    width = dilation_width(gt.shape, dilation_ratio)
    p_edge, g_edge = ~_uniform_windows(pred, width), ~_uniform_windows(gt, width)
    if ignore_index is not None:
        p_edge &= gt != ignore_index
    p_lab, g_lab = pred[p_edge], gt[g_edge]  # every class's boundary pixels at once
    both = pred[p_edge & g_edge & (pred == gt)]
    size = int(max(pred.max(), gt.max(), max(classes, default=0))) + 1
    p_n, g_n, inter = (np.bincount(v.ravel().astype(np.int64), minlength=size) for v in (p_lab, g_lab, both))
    return {int(c): (int(inter[c]), int(p_n[c] + g_n[c] - inter[c])) for c in classes}


def boundary_iou_from_counts(inter: float, union: float) -> float:
    """``inter / union``; NaN when the union is empty (no boundary in either mask)."""
    return inter / union if union else float("nan")


def boundary_iou(
    pred: np.ndarray,
    gt: np.ndarray,
    dilation_ratio: float = 0.02,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
) -> float | dict[int, float]:
    """Boundary IoU (Cheng et al., CVPR 2021) of one image: IoU of the boundary regions of pred and gt.

    Boolean masks give one value; integer label maps give ``{class: value}`` for ``classes``
    (default: every label in either map other than ``ignore_index``). NaN where neither mask has a
    pixel. See :func:`boundary_counts` for the definition; dataset-level Boundary IoU sums the counts
    over images before dividing, per class, then averages over classes (the confusion-matrix mIoU
    scheme the authors recommend for semantic segmentation, boundary-iou-api#4).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.dtype == bool and gt.dtype == bool:
        inter, union = boundary_counts(pred.view(np.uint8), gt.view(np.uint8), [1], dilation_ratio)[1]
        return boundary_iou_from_counts(inter, union)
    if classes is None:
        classes = sorted((set(np.unique(pred).tolist()) | set(np.unique(gt).tolist())) - {ignore_index})
    counts = boundary_counts(pred, gt, classes, dilation_ratio, ignore_index)
    return {c: boundary_iou_from_counts(*counts[c]) for c in counts}


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, *, ignore_index: int) -> Tensor:
    """Pixel confusion matrix ``[K,K]`` int64 on the inputs' device: rows GT, columns prediction.

    ``pred``/``target``: integer tensors of the same shape (any), ``pred`` in ``[0,K)`` and ``target``
    in ``[0,K)`` or ``ignore_index``. Ignored pixels go to an extra bin that is dropped, so shapes are
    static and nothing syncs with the host; the counting is a ``scatter_add_`` (deterministic on CUDA
    under ``torch.use_deterministic_algorithms``). Value ranges are checked for CPU tensors only (a
    check on CUDA would sync). Sum the matrices over batches and DDP ranks.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    k = num_classes
    valid = target != ignore_index
    if pred.device.type == "cpu":
        bad_pred = (pred < 0) | (pred >= k)
        bad_target = valid & ((target < 0) | (target >= k))
        for name, bad, t in (("pred", bad_pred, pred), ("target", bad_target, target)):
            if bool(bad.any()):
                raise ValueError(
                    f"{name} holds value {int(t[bad][0])} outside [0, {k}) (ignore_index={ignore_index}); "
                    "map labels to train ids first"
                )
    index = torch.where(valid, target.long() * k + pred.long(), k * k).reshape(-1)
    counts = torch.zeros(k * k + 1, dtype=torch.int64, device=index.device)
    counts.scatter_add_(0, index, torch.ones((), dtype=torch.int64, device=index.device).expand_as(index))
    return counts[: k * k].view(k, k)


def scores_from_confusion(cm: Tensor | np.ndarray) -> dict:
    """Per-class and mean scores of an accumulated confusion matrix (rows GT, columns prediction).

    Returns plain Python values: ``iou`` and ``dice`` lists (NaN where a class is absent from both GT
    and prediction), ``miou``/``mdice`` (NaN-mean over classes) and ``pixel_acc`` (NaN if empty).
    """
    m = cm.detach().cpu().numpy() if isinstance(cm, Tensor) else np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square [K,K], got shape {m.shape}")
    m = m.astype(np.float64)
    tp = np.diag(m)
    fp, fn = m.sum(0) - tp, m.sum(1) - tp
    present = tp + fp + fn > 0
    iou = np.where(present, tp / np.where(present, tp + fp + fn, 1), np.nan)
    dice = np.where(present, 2 * tp / np.where(present, 2 * tp + fp + fn, 1), np.nan)
    total = m.sum()
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "miou": nanmean(iou),
        "mdice": nanmean(dice),
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
    }


def nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")
