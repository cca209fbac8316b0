"""Evaluation protocols: per-case scoring and the metrics block of a run record.

A protocol is a registered :class:`Protocol` (``get_protocol(name)``, ``list_protocols()``; the name is
a value of ``data.protocol``). It fixes the empty-case rule, the HD95 units, the scores it reports and
how cases are aggregated. Every row carries ``empty`` (which mask is empty: ``"none"``, ``"both"``,
``"pred"`` or ``"gt"``) and every mean the counts of the rows it excluded and of the rows whose values
the rule set instead of measuring.

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

Tables show a protocol's ``headline`` score per class (IoU for ``cityscapes``, else DSC).

Settings (:func:`metric_settings`, from the data config): ``nsd_tolerance`` (τ in the protocol's
units, one number for every class or one per class name; default :data:`NSD_TOLERANCE`) and
``boundary_dilation_ratio`` (Boundary IoU's d / image diagonal; default 0.02, Cheng et al.).

Units: ``units_for(protocol, spacing)`` gives what the evaluator should pass; ``summarize`` forces
``"voxel"`` for a protocol with ``voxel_units`` (``transunet``) whatever it is given.

Ignored labels: the caller passes ``ignore_index`` (the evaluator passes ``datasets.IGNORE_INDEX``);
this module and ``bench.metrics`` import no dataset module, so the results package can import them.

Class subsets (``summarize(subsets=...)``, e.g. Synthia's mIoU16/mIoU13): the block's ``subsets``
holds, per subset (key lower-cased), its class names and, for each of the protocol's scores, the
NaN-mean over its classes of ``per_class[class][score]`` (classes without rows are skipped).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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

#: NSD tolerance τ of every class when the data config names none: 1 mm (or voxel), every organ's
#: tolerance in the FLARE abdominal-CT challenges' evaluation code (github.com/JunMa11/FLARE, NSD-1mm)
NSD_TOLERANCE = 1.0
#: Boundary IoU's width d as a fraction of the image diagonal (Cheng et al., CVPR 2021)
BOUNDARY_DILATION_RATIO = 0.02
#: the kinds of empty case (``"none"``: both masks non-empty, always measured)
EMPTY_KINDS: tuple[str, ...] = ("both", "pred", "gt")
#: a :class:`Fill` distance meaning "the image/volume diagonal in the reported units"
DIAGONAL = "diagonal"

#: the scores a row may carry that are measured on one (pred, gt) pair, in row order: how each is
#: read from ``bench.metrics.PairMetrics`` (given the class's NSD tolerance) and which value of a
#: :class:`Fill` replaces it in an empty case
_PAIR_SCORES: dict[str, tuple[Callable[[PairMetrics, float | None], float], str]] = {
    "dsc": (lambda m, tau: m.dsc, "overlap"),
    "iou": (lambda m, tau: m.iou, "overlap"),
    "hd95": (lambda m, tau: m.hd95, "distance"),
    "hd95_pred_gt": (lambda m, tau: m.hd95_directed[0], "distance"),
    "hd95_gt_pred": (lambda m, tau: m.hd95_directed[1], "distance"),
    "nsd": (lambda m, tau: m.nsd(tau), "overlap"),
    "assd": (lambda m, tau: m.assd, "distance"),
}
#: row scores of every protocol besides its reported ones: the directed HD95s
_DIRECTED = ("hd95_pred_gt", "hd95_gt_pred")


@dataclass(frozen=True)
class Fill:
    """The values an empty-case rule sets: ``overlap`` for DSC, IoU and NSD, ``distance`` for HD95
    (pooled and directed) and ASSD (a number, or :data:`DIAGONAL`)."""

    overlap: float
    distance: float | Literal["diagonal"]


@dataclass(frozen=True)
class EmptyRule:
    """What a protocol does with a (case, class) whose pred or gt mask is empty: ``fills`` the values
    per kind of :data:`EMPTY_KINDS`; rows of the ``excluded`` kinds (NaN) leave the means, the others
    count as ``penalised``."""

    fills: Mapping[str, Fill]
    excluded: tuple[str, ...] = ()

    @property
    def penalised(self) -> tuple[str, ...]:
        return tuple(k for k in EMPTY_KINDS if k not in self.excluded)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol (see the module docstring).

    ``scores``: the scores of its rows and means, in table order; ``headline``: the per-class score
    of tables; ``voxel_units``: spacing ignored, HD95 in voxels; ``dataset_iou``: ``per_class[*].iou``
    and ``mean.iou`` from the dataset's confusion matrix (``summarize`` needs ``confusion``). Boundary
    IoU is reported when ``"biou"`` is one of the scores."""

    name: str
    scores: tuple[str, ...]
    headline: str
    empty_rule: EmptyRule
    voxel_units: bool = False
    dataset_iou: bool = False

    @property
    def boundary_iou(self) -> bool:
        return "biou" in self.scores

    @property
    def row_scores(self) -> tuple[str, ...]:
        """The measured scores of each row (before ``empty`` and any Boundary IoU keys)."""
        return tuple(k for k in _PAIR_SCORES if k in self.scores or k in _DIRECTED)


_REGISTRY: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """Register ``protocol`` under its name (a value of ``data.protocol``)."""
    if protocol.name in _REGISTRY:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    if sorted(protocol.empty_rule.fills) != sorted(EMPTY_KINDS):
        raise ValueError(f"protocol {protocol.name!r}: its empty-case rule must fill each of {EMPTY_KINDS}")
    if protocol.headline not in protocol.scores:
        raise ValueError(
            f"protocol {protocol.name!r}: headline {protocol.headline!r} is not one of its scores"
        )
    _REGISTRY[protocol.name] = protocol
    return protocol


def list_protocols() -> list[str]:
    """Names of the registered protocols, in registration order."""
    return list(_REGISTRY)


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a clear ``ValueError`` names ``data.protocol`` and the choices."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown evaluation protocol {name!r} (data.protocol); choose one of {', '.join(_REGISTRY)}"
        ) from None


#: measured when both masks are non-empty; NaN (excluded) when both are empty; the worst case when one is
DEFAULT_RULE = EmptyRule(
    fills={"both": Fill(math.nan, math.nan), "pred": Fill(0.0, DIAGONAL), "gt": Fill(0.0, DIAGONAL)},
    excluded=("both",),
)
DEFAULT = register_protocol(
    Protocol("default", scores=("dsc", "iou", "hd95", "nsd", "assd"), headline="dsc", empty_rule=DEFAULT_RULE)
)
TRANSUNET = register_protocol(
    Protocol(
        "transunet",
        scores=("dsc", "iou", "hd95"),
        headline="dsc",
        # TransUNet scores a false positive on an absent organ 1 (GT empty), a miss and a correct absence 0
        empty_rule=EmptyRule(fills={"both": Fill(0.0, 0.0), "pred": Fill(0.0, 0.0), "gt": Fill(1.0, 0.0)}),
        voxel_units=True,
    )
)
CITYSCAPES = register_protocol(
    Protocol(
        "cityscapes",
        scores=("dsc", "iou", "hd95", "biou"),
        headline="iou",
        empty_rule=DEFAULT_RULE,
        dataset_iou=True,
    )
)


def units_for(protocol: str, spacing: Sequence[float] | None) -> str:
    """HD95 units of a protocol: ``"voxel"`` for transunet, else ``"mm"`` with spacing, else ``"px"``."""
    if get_protocol(protocol).voxel_units:
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
    ignore_index: int,
    connectivity: int = 1,
    nsd_tolerance: float | Mapping[int, float] = NSD_TOLERANCE,
    dilation_ratio: float = BOUNDARY_DILATION_RATIO,
) -> list[dict]:
    """pred/gt: integer label arrays of one case (2D image or 3D volume [D,H,W]), same shape; gt may
    contain ``ignore_index`` (those voxels are excluded from both masks). One row per class in
    `classes`: {"class": int, "dsc": float, "iou": float, "hd95": float, "hd95_pred_gt": float,
     "hd95_gt_pred": float, "empty": "none"|"both"|"pred"|"gt"} — after the protocol's empty-case
    rule (NaN = excluded from means) — plus ``"nsd"`` and ``"assd"`` (``default``) or ``"biou"``,
    ``"biou_inter"`` and ``"biou_union"`` (``cityscapes``).

    ``spacing`` is per array axis (``(z, y, x)`` in mm for a volume); transunet ignores it. All
    classes are measured together by ``bench.metrics.measure_classes``: each class's surfaces are
    found once per case, and HD95, NSD and ASSD all read the same surface distances.
    ``nsd_tolerance``: τ in the reported units, one number or ``{class id: τ}`` covering ``classes``.
    """
    p = get_protocol(protocol)
    pred, gt = np.asarray(pred), np.asarray(gt)
    check_pair(pred, gt, connectivity)
    for name, a in (("pred", pred), ("gt", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label array, got dtype {a.dtype}")
    classes = [int(c) for c in classes]
    if not classes or min(classes) < 0 or ignore_index in classes or len(set(classes)) < len(classes):
        raise ValueError(f"classes must be distinct class ids >= 0 other than {ignore_index}, got {classes}")
    if p.voxel_units:
        spacing = None
    tolerance = nsd_tolerance if isinstance(nsd_tolerance, Mapping) else dict.fromkeys(classes, nsd_tolerance)
    if "nsd" in p.scores and not set(classes) <= set(tolerance):
        raise ValueError(f"nsd_tolerance has no value for class(es) {sorted(set(classes) - set(tolerance))}")
    penalty = diagonal(gt.shape, check_spacing(spacing, gt.ndim))
    pairs = measure_classes(pred, gt, classes, spacing, connectivity, ignore_index=ignore_index)
    rows = [
        {"class": c, **_apply_rule(p, m, penalty, tolerance.get(c)), "empty": m.empty}
        for c, m in pairs.items()
    ]
    if p.boundary_iou:
        counts = boundary_counts(pred, gt, classes, dilation_ratio, ignore_index=ignore_index)
        for row in rows:
            inter, union = counts[row["class"]]
            row.update(biou=boundary_iou_from_counts(inter, union), biou_inter=inter, biou_union=union)
    return rows


def _apply_rule(p: Protocol, m: PairMetrics, penalty: float, tolerance: float | None) -> dict:
    """The row scores of one (case, class): measured, or set by the protocol's empty-case rule
    (``penalty``: the diagonal in the reported units)."""
    if m.empty == "none":
        return {k: float(_PAIR_SCORES[k][0](m, tolerance)) for k in p.row_scores}
    fill = p.empty_rule.fills[m.empty]
    values = {"overlap": fill.overlap, "distance": penalty if fill.distance == DIAGONAL else fill.distance}
    return {k: float(values[_PAIR_SCORES[k][1]]) for k in p.row_scores}


def summarize(
    protocol: str,
    rows: list[dict],
    *,
    class_names: Sequence[str],
    units: str,
    confusion: np.ndarray | None = None,
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> dict:
    """rows: all cases' rows, each with an added "case": str. Returns the JSON-ready metrics block
    of the run record: {"protocol", "units", "mean": {score: float}, "per_class":
    {name: {score: float, "n", "excluded", "penalised"}}, "subsets": {key: {"classes": [names],
    score: float}}, "per_case": [rows...], "empty": {"excluded": int, "penalised": int, ...},
    "confusion": {"iou": [...], "dice": [...], "miou", "mdice", "pixel_acc"} (when confusion is
    given)}. For `cityscapes`, mean.iou is the dataset-level mIoU and mean.biou the dataset-level mean
    Boundary IoU. Scores: the protocol's ``scores``. Values are plain Python floats (NaN allowed only
    where documented).

    ``class_names`` is indexed by class id (the dataset's names, ``confusion`` is ``[K,K]`` with
    ``K = len(class_names)``). ``n`` counts a class's rows (cases); its means run over the ``n -
    excluded`` rows that are not NaN, and are NaN only when all are excluded; ``mean`` is the NaN-mean
    of the per-class means. ``empty`` also counts the rows of each kind (``both``, ``pred``, ``gt``).
    The ``confusion`` block covers all K classes; cityscapes' ``mean.iou`` averages its IoU over the
    classes present in ``rows``. Requires ``confusion`` for cityscapes. ``subsets``: ``{name: [class
    id]}`` (e.g. a dataset's ``eval_subsets``), averaged as the module docstring says; ``{}`` if None.
    """
    p = get_protocol(protocol)
    if not rows:
        raise ValueError("summarize: no rows to summarize (the evaluation scored no case)")
    if p.dataset_iou and confusion is None:
        raise ValueError(f"protocol {p.name!r} needs the dataset confusion matrix (confusion=...)")
    rule = p.empty_rule
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

    per_class = {}
    for c in sorted(by_class):
        group = by_class[c]
        stats = {k: nanmean([r[k] for r in group]) for k in p.scores}
        if p.dataset_iou:
            stats["iou"] = cm_scores["iou"][c]
        if p.boundary_iou:
            stats["biou"] = boundary_iou_from_counts(
                sum(r["biou_inter"] for r in group), sum(r["biou_union"] for r in group)
            )
        per_class[class_names[c]] = {
            **stats,
            "n": len(group),
            "excluded": sum(r["empty"] in rule.excluded for r in group),
            "penalised": sum(r["empty"] in rule.penalised for r in group),
        }

    kinds = [r["empty"] for r in rows]
    out = {
        "protocol": p.name,
        "units": "voxel" if p.voxel_units else units,
        "mean": {k: nanmean([s[k] for s in per_class.values()]) for k in p.scores},
        "per_class": per_class,
        "subsets": subset_means(per_class, subsets or {}, class_names=class_names, scores=p.scores),
        "per_case": [_plain(r) for r in rows],
        "empty": {
            "excluded": sum(k in rule.excluded for k in kinds),
            "penalised": sum(k in rule.penalised for k in kinds),
            **{kind: kinds.count(kind) for kind in EMPTY_KINDS},
        },
    }
    if cm_scores is not None:
        out["confusion"] = cm_scores
    return out


def subset_means(
    per_class: Mapping[str, Mapping[str, float]],
    subsets: Mapping[str, Sequence[int]],
    *,
    class_names: Sequence[str],
    scores: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """``{subset key lower-cased: {"classes": [names], score: NaN-mean over the subset's classes of
    per_class[name][score]}}``; classes absent from ``per_class`` (no rows) are skipped."""
    out = {}
    for key, ids in subsets.items():
        bad = [c for c in ids if not 0 <= int(c) < len(class_names)]
        if bad:
            raise ValueError(
                f"class subset {key!r} holds class id(s) {bad} outside the {len(class_names)} classes "
                f"{list(class_names)}; list train ids 0-{len(class_names) - 1}"
            )
        names = [class_names[int(c)] for c in ids]
        present = [per_class[n] for n in names if n in per_class]
        out[key.lower()] = {"classes": names, **{k: nanmean([s[k] for s in present]) for k in scores}}
    return out


def _plain(row: dict) -> dict:
    """A row with NumPy scalars turned into plain Python values."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
