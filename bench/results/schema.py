"""The names shared by run records, W&B runs and tables: one definition of each.

- Table keys: a row of a summary table is identified by its section (:data:`SECTION`: experiment
  ``name``, ``data``, evaluation ``protocol``, ``model``) and row (:data:`ROW`: loss ``category``,
  ``loss``, ``variant``).
- Scores: :data:`SCORES` are the per-class and mean scores a record may carry (the protocols'
  scores); :data:`LOWER_IS_BETTER` the distances, every other score is a fraction where higher is
  better. :func:`display_scale` turns record units into displayed units (fractions into %).
- Class subsets: a record's ``metrics.subsets`` holds per subset of the evaluated dataset's classes
  (``miou16``, ``miou13`` for Synthia→Cityscapes) the mean of each score over those classes; a table
  shows a subset's :data:`SUBSET_SCORE` in the column named by the subset (:data:`SUBSETS`).
- Mean columns: :data:`HEADLINE` (labels), :data:`PAPER_FORM` (shown unless others are selected),
  :data:`ALWAYS` (shown even without a value).
- Record fields read by the tables: ``metrics`` and ``more_metrics`` (:func:`metric_blocks`: one
  block per evaluation protocol), ``metrics.subsets`` (:data:`SUBSETS_FIELD`), and per-case
  ground-truth sizes (:data:`GT_SIZE`, pixels/voxels of the class in the case, ignore pixels not
  counted).
- W&B keys (``bench.logger`` writes them, ``bench.results.load`` reads them back): a metrics block
  goes under a prefix (:func:`wandb_prefix`: ``test`` for the first protocol, ``test/<protocol>``
  for the others), as ``<prefix>/<score>`` (means), ``<prefix>/<score>/<class>`` (per class),
  ``<prefix>/subsets/<subset>/<score>`` and the table ``<prefix>/per_class``
  (:func:`wandb_summary`, :func:`wandb_block`). Training curves log :data:`TRAIN_LOSS` and periodic
  evaluations ``test/<score>`` (:func:`eval_key`), as the record's ``history`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocols import get_protocol, list_protocols

SECTION = ["name", "data", "protocol", "model"]
ROW = ["category", "loss", "variant"]
KEYS = SECTION + ROW
#: the per-class and mean scores of the paper form (and of the statistics by default)
MEANS = {"dsc": "DSC", "hd95": "HD95", "iou": "IoU"}
#: every per-class and mean score a record may carry (the registered protocols' scores), with its label
SCORES = {**MEANS, "nsd": "NSD", "assd": "ASSD", "biou": "Boundary IoU"}
LOWER_IS_BETTER = ("hd95", "assd")
#: the class subsets a table shows (record key → label); the column holds the subset's mean IoU
SUBSETS = {"miou16": "mIoU16", "miou13": "mIoU13"}
SUBSET_SCORE = "iou"
HEADLINE = {
    "dsc": "mean DSC",
    "hd95": "mean HD95",
    "iou": "mIoU",
    **SUBSETS,
    "nsd": "mean NSD",
    "assd": "mean ASSD",
    "biou": "mean Boundary IoU",
}
#: the mean columns of a rendered table unless others are selected (the paper form)
PAPER_FORM = ("dsc", "hd95", "iou", *SUBSETS)
#: mean columns shown even where a section has no value
ALWAYS = tuple(MEANS)

MORE_METRICS = "more_metrics"
SUBSETS_FIELD = "subsets"
GT_SIZE = "gt_size"

TEST = "test"
TRAIN_LOSS = "train/loss"
PER_CLASS_TABLE = "per_class"


def display_scale(key: str) -> float:
    """Factor from record units to displayed units: 100 for fractions (%), 1 for distances."""
    return 1.0 if key.split("/", 1)[0] in LOWER_IS_BETTER else 100.0


def per_class_metric(protocol: str) -> str:
    """The per-class column metric of a section: the protocol's ``headline`` (IoU for ``cityscapes``,
    else DSC); DSC for a row without a known protocol (e.g. a W&B run that never finished)."""
    return get_protocol(protocol).headline if protocol in list_protocols() else "dsc"


def is_metric(col: str) -> bool:
    """True for mean, subset and per-class metric columns (``dsc``, ``miou16``, ``iou/road`` …)."""
    return col in HEADLINE or ("/" in col and ":" not in col and col.split("/", 1)[0] in SCORES)


def metric_blocks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics blocks of a record, one per evaluation protocol (``metrics``, then
    ``more_metrics``); empty when the run has none (failed or unfinished)."""
    first = record.get("metrics")
    return [first, *(record.get(MORE_METRICS) or [])] if first else []


def eval_key(score: str) -> str:
    """The key of a periodic evaluation's mean ``score`` in the history and on W&B."""
    return f"{TEST}/{score}"


def wandb_prefix(protocol: str | None = None) -> str:
    """W&B key prefix of a metrics block: ``test`` for the record's ``metrics`` (``protocol``
    None), ``test/<protocol>`` for a block of ``more_metrics``."""
    return TEST if protocol is None else f"{TEST}/{protocol}"


def wandb_summary(block: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The W&B summary keys of a metrics block's :data:`SCORES` (means, per class, subsets) under
    ``prefix``."""
    out = {f"{prefix}/{score}": v for score, v in block["mean"].items() if score in SCORES}
    for cls, values in block["per_class"].items():
        out |= {f"{prefix}/{score}/{cls}": v for score, v in values.items() if score in SCORES}
    for name, sub in (block.get(SUBSETS_FIELD) or {}).items():
        out |= {f"{prefix}/{SUBSETS_FIELD}/{name}/{s}": v for s, v in sub.items() if s in SCORES}
    return out


def wandb_block(summary: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    """The metrics block (``mean``, ``per_class``, ``subsets``) that :func:`wandb_summary` wrote
    under ``prefix``; None when the summary has no mean DSC there."""
    mean = {s: summary.get(f"{prefix}/{s}") for s in SCORES}
    if mean["dsc"] is None:
        return None
    per_class: dict[str, dict[str, Any]] = {}
    subsets: dict[str, dict[str, Any]] = {}
    for key, value in summary.items():
        if not key.startswith(prefix + "/"):
            continue
        head, _, rest = key[len(prefix) + 1 :].partition("/")
        if head in SCORES and rest:
            per_class.setdefault(rest, {})[head] = value
        elif head == SUBSETS_FIELD:
            name, _, score = rest.partition("/")
            if score in SCORES:
                subsets.setdefault(name, {})[score] = value
    return {"mean": mean, "per_class": per_class, SUBSETS_FIELD: subsets}
