"""Evaluation protocols: per-case scoring and the metrics block of a run record.

A protocol fixes the empty-case rule, the HD95 units and how cases are aggregated. Every row carries
``empty`` (which mask is empty: ``"none"``, ``"both"``, ``"pred"`` or ``"gt"``) and every mean the
counts of the rows it excluded and of the rows whose values the rule set instead of measuring.

- ``default``: DSC, IoU, medpy-definition HD95, NSD at a per-class tolerance τ and ASSD
  (``bench.metrics``), distances in mm when spacing is known, else pixels/voxels. Both empty: NaN
  everywhere, excluded from means (counted as ``excluded``). Exactly one empty: DSC, IoU and NSD 0;
  HD95 (pooled and both directed) and ASSD = the image/volume diagonal in the reported units, a
  spacing-aware worst case (counted as ``penalised``). Means: per class over cases, then over
  classes.
- ``transunet``: TransUNet/Swin-Unet's Synapse evaluation, for comparison with their tables. Spacing
  is ignored (HD95 in voxels). Both non-empty: measured; pred non-empty and GT empty: DSC 1, HD95 0;
  otherwise (a miss, or both empty): DSC 0, HD95 0. Nothing is excluded; every rule-set row counts as
  ``penalised`` (including the (1, 0) that rewards a false positive). IoU follows DSC's rule. Means:
  per class over cases, then over classes.
- ``cityscapes``: the official headline, dataset-level IoU from the accumulated confusion matrix
  (``mean.iou`` and ``per_class[*].iou``); dataset-level Boundary IoU (``biou``: per class, the
  boundary intersections and unions of every image summed, then divided; ``mean.biou`` averages the
  classes), plus per-image DSC and HD95 with the default rule. Rows carry the image's ``biou`` and its
  counts ``biou_inter``/``biou_union``; a class in neither image has no boundary (NaN, excluded), a
  class in one only scores 0 (penalised).

Settings (:func:`metric_settings`, from the data config): ``nsd_tolerance`` (τ in the protocol's
units, one number for every class or one per class name; default :data:`NSD_TOLERANCE`) and
``boundary_dilation_ratio`` (Boundary IoU's d / image diagonal; default 0.02, Cheng et al.).

Units: ``units_for(protocol, spacing)`` gives what the evaluator should pass; ``summarize`` forces
``"voxel"`` for ``transunet`` whatever it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import (
    PairMetrics,
    boundary_counts,
    boundary_iou_from_counts,
    check_pair,
    check_spacing,
    diagonal,
    measure_classes,
    nanmean,
    scores_from_confusion,
)

PROTOCOLS: tuple[str, ...] = ("default", "transunet", "cityscapes")
IGNORE_INDEX = 255
#: the scores of each protocol's rows and means, in table order
SCORES = {
    "default": ("dsc", "iou", "hd95", "nsd", "assd"),
    "transunet": ("dsc", "iou", "hd95"),
    "cityscapes": ("dsc", "iou", "hd95", "biou"),
}
#: NSD tolerance τ of every class when the data config names none: 1 mm (or voxel), every organ's
#: tolerance in the FLARE abdominal-CT challenges' evaluation code (github.com/JunMa11/FLARE, NSD-1mm)
NSD_TOLERANCE = 1.0
#: Boundary IoU's width d as a fraction of the image diagonal (Cheng et al., CVPR 2021)
BOUNDARY_DILATION_RATIO = 0.02
#: per protocol: empty kinds excluded from means, and kinds whose values the rule sets
EMPTY_RULES = {
    "default": (("both",), ("pred", "gt")),
    "transunet": ((), ("pred", "gt", "both")),
    "cityscapes": (("both",), ("pred", "gt")),
}


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def units_for(protocol: str, spacing: Sequence[float] | None) -> str:
    """HD95 units of a protocol: ``"voxel"`` for transunet, else ``"mm"`` with spacing, else ``"px"``."""
    check_protocol(protocol)
    if protocol == "transunet":
        return "voxel"
    return "mm" if spacing is not None else "px"


def metric_settings(cfg: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """``score_case`` keyword arguments from a data config: ``nsd_tolerance`` as ``{class id: τ}``
    and ``dilation_ratio``. ``cfg["nsd_tolerance"]``: a number (every class) or ``{class name:
    number}``; classes it leaves out take :data:`NSD_TOLERANCE`. Absent keys take the defaults."""
    raw = cfg.get("nsd_tolerance")
    raw = NSD_TOLERANCE if raw is None else raw
    if isinstance(raw, Mapping):
        unknown = sorted(set(map(str, raw)) - set(class_names))
        if unknown:
            raise ValueError(
                f"data.nsd_tolerance names unknown class(es) {unknown}; "
                f"use class names from {list(class_names)}"
            )
        tolerance = {i: raw.get(n, NSD_TOLERANCE) for i, n in enumerate(class_names)}
    else:
        tolerance = dict.fromkeys(range(len(class_names)), raw)
    for i, tau in tolerance.items():
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not (math.isfinite(tau) and tau >= 0):
            raise ValueError(
                f"data.nsd_tolerance for {class_names[i]!r} is {tau!r}; give a finite number >= 0 "
                "(in the units of HD95)"
            )
    ratio = cfg.get("boundary_dilation_ratio")
    ratio = BOUNDARY_DILATION_RATIO if ratio is None else ratio
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (0 < ratio < 1):
        raise ValueError(
            f"data.boundary_dilation_ratio is {ratio!r}; give a fraction of the diagonal in (0, 1)"
        )
    return {"nsd_tolerance": {i: float(t) for i, t in tolerance.items()}, "dilation_ratio": float(ratio)}


def score_case(
    protocol: str,
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    classes: Sequence[int],
    spacing: Sequence[float] | None,
    connectivity: int = 1,
    nsd_tolerance: float | Mapping[int, float] = NSD_TOLERANCE,
    dilation_ratio: float = BOUNDARY_DILATION_RATIO,
) -> list[dict]:
    """pred/gt: integer label arrays of one case (2D image or 3D volume [D,H,W]), same shape; gt may
    contain 255 (ignore: those voxels are excluded from both masks). One row per class in `classes`:
    {"class": int, "dsc": float, "iou": float, "hd95": float, "hd95_pred_gt": float,
     "hd95_gt_pred": float, "empty": "none"|"both"|"pred"|"gt"} — after the protocol's empty-case
    rule (NaN = excluded from means) — plus ``"nsd"`` and ``"assd"`` (``default``) or ``"biou"``,
    ``"biou_inter"`` and ``"biou_union"`` (``cityscapes``).

    ``spacing`` is per array axis (``(z, y, x)`` in mm for a volume); transunet ignores it. All
    classes are measured together by ``bench.metrics.measure_classes``: each class's surfaces are
    found once per case, and HD95, NSD and ASSD all read the same surface distances.
    ``nsd_tolerance``: τ in the reported units, one number or ``{class id: τ}`` covering ``classes``.
    """
    check_protocol(protocol)
    pred, gt = np.asarray(pred), np.asarray(gt)
    check_pair(pred, gt, connectivity)
    for name, a in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label array, got dtype {a.dtype}")
    classes = [int(c) for c in classes]
    if not classes or min(classes) < 0 or IGNORE_INDEX in classes or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be distinct class ids >= 0 other than {IGNORE_INDEX}, got {classes}")
    if protocol == "transunet":
        spacing = None
    tolerance = nsd_tolerance if isinstance(nsd_tolerance, Mapping) else dict.fromkeys(classes, nsd_tolerance)
    if protocol == "default" and not set(classes) <= set(tolerance):
        raise ValueError(f"nsd_tolerance has no value for class(es) {sorted(set(classes) - set(tolerance))}")
    penalty = diagonal(gt.shape, check_spacing(spacing, gt.ndim))
    pairs = measure_classes(pred, gt, classes, spacing, connectivity, ignore_index=IGNORE_INDEX)
    rows = [
        {"class": c, **_apply_rule(protocol, m, penalty, tolerance.get(c)), "empty": m.empty}
        for c, m in pairs.items()
    ]
    if protocol == "cityscapes":
        counts = boundary_counts(pred, gt, classes, dilation_ratio, ignore_index=IGNORE_INDEX)
        for row in rows:
            inter, union = counts[row["class"]]
            row.update(biou=boundary_iou_from_counts(inter, union), biou_inter=inter, biou_union=union)
    return rows


def _apply_rule(protocol: str, m: PairMetrics, penalty: float, tolerance: float | None) -> dict:
    """The scores of one (case, class) under the protocol's empty-case rule."""
    empty = m.empty
    if empty == "none":
        values = (m.dsc, m.iou, m.hd95, *m.hd95_directed)
    elif protocol == "transunet":
        hit = 1.0 if empty == "gt" else 0.0  # TransUNet scores a false positive on an absent organ 1
        values = (hit, hit, 0.0, 0.0, 0.0)
    elif empty == "both":
        values = (math.nan,) * 5
    else:
        values = (0.0, 0.0, penalty, penalty, penalty)
    out = dict(zip(("dsc", "iou", "hd95", "hd95_pred_gt", "hd95_gt_pred"), map(float, values), strict=True))
    if protocol == "default":  # NSD 0 and ASSD the penalty when exactly one mask is empty
        nsd_assd = {"none": (m.nsd(tolerance), m.assd), "both": (math.nan, math.nan)}.get(
            empty, (0.0, penalty)
        )
        out.update(nsd=float(nsd_assd[0]), assd=float(nsd_assd[1]))
    return out


def summarize(
    protocol: str,
    rows: list[dict],
    *,
    class_names: Sequence[str],
    units: str,
    confusion: np.ndarray | None = None,
) -> dict:
    """rows: all cases' rows, each with an added "case": str. Returns the JSON-ready metrics block
    of the run record: {"protocol", "units", "mean": {score: float}, "per_class":
    {name: {score: float, "n", "excluded", "penalised"}}, "per_case": [rows...],
    "empty": {"excluded": int, "penalised": int, ...}, "confusion": {"iou": [...], "dice": [...],
    "miou", "mdice", "pixel_acc"} (when confusion is given)}. For `cityscapes`, mean.iou is the
    dataset-level mIoU and mean.biou the dataset-level mean Boundary IoU. Scores: :data:`SCORES` of
    the protocol. Values are plain Python floats (NaN allowed only where documented).

    ``class_names`` is indexed by class id (the dataset's names, ``confusion`` is ``[K,K]`` with
    ``K = len(class_names)``). ``n`` counts a class's rows (cases); its means run over the ``n -
    excluded`` rows that are not NaN, and are NaN only when all are excluded; ``mean`` is the NaN-mean
    of the per-class means. ``empty`` also counts the rows of each kind (``both``, ``pred``, ``gt``).
    The ``confusion`` block covers all K classes; cityscapes' ``mean.iou`` averages its IoU over the
    classes present in ``rows``. Requires ``confusion`` for cityscapes.
    """
    check_protocol(protocol)
    if not rows:
        raise ValueError("summarize: no rows to summarize (the evaluation scored no case)")
    if protocol == "cityscapes" and confusion is None:
        raise ValueError("protocol 'cityscapes' needs the dataset confusion matrix (confusion=...)")
    excluded_kinds, penalised_kinds = EMPTY_RULES[protocol]
    cm_scores = None
    if confusion is not None:
        cm_scores = scores_from_confusion(confusion)
        if len(cm_scores["iou"]) != len(class_names):
            raise ValueError(
                f"confusion matrix is {len(cm_scores['iou'])}x{len(cm_scores['iou'])} "
                f"but there are {len(class_names)} class names"
            )

    by_class: dict[int, list[dict]] = {}
    for i, row in enumerate(rows):
        if "case" not in row:
            raise ValueError(f"row {i} (class {row.get('class')}) has no 'case': add the case id to each row")
        c = int(row["class"])
        if not 0 <= c < len(class_names):
            raise ValueError(f"row {i} has class {c}, outside the {len(class_names)} class names")
        by_class.setdefault(c, []).append(row)

    scores = SCORES[protocol]
    per_class = {}
    for c in sorted(by_class):
        group = by_class[c]
        stats = {k: nanmean([r[k] for r in group]) for k in scores}
        if protocol == "cityscapes":
            stats["iou"] = cm_scores["iou"][c]
            stats["biou"] = boundary_iou_from_counts(
                sum(r["biou_inter"] for r in group), sum(r["biou_union"] for r in group)
            )
        per_class[class_names[c]] = {
            **stats,
            "n": len(group),
            "excluded": sum(r["empty"] in excluded_kinds for r in group),
            "penalised": sum(r["empty"] in penalised_kinds for r in group),
        }

    kinds = [r["empty"] for r in rows]
    out = {
        "protocol": protocol,
        "units": "voxel" if protocol == "transunet" else units,
        "mean": {k: nanmean([s[k] for s in per_class.values()]) for k in scores},
        "per_class": per_class,
        "per_case": [_plain(r) for r in rows],
        "empty": {
            "excluded": sum(k in excluded_kinds for k in kinds),
            "penalised": sum(k in penalised_kinds for k in kinds),
            **{kind: kinds.count(kind) for kind in ("both", "pred", "gt")},
        },
    }
    if cm_scores is not None:
        out["confusion"] = cm_scores
    return out


def _plain(row: dict) -> dict:
    """A row with NumPy scalars turned into plain Python values."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
