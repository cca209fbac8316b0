"""Evaluation: predict the test split, reassemble cases, score them with named protocols.

The pieces, in the order data flows through them: :func:`predictions` (one batch at a time: logits
resized to the label's native resolution before the argmax, the dataset-level confusion matrix
accumulated on the device), :func:`reassemble` (slices of one case arrive contiguously, the dataset
contract, and are stacked in slice order), :func:`submit` (per-case metrics — DSC, IoU, HD95, NSD,
ASSD with the case's spacing, Boundary IoU counts — computed on the CPU by
``bench.protocols.score_case``, in worker processes when ``workers > 0``, while the GPU keeps
predicting the next cases), :func:`gather` (rows in dataset order, over DDP ranks) and
``bench.protocols.summarize``.

Besides the protocol's scores, every row carries ``gt_size``: the ground-truth pixels/voxels of its
class in its case (ignored ones excluded), and every metrics block the means of the dataset's class
subsets (``subsets``, from its ``eval_subsets``), so tables need no dataset module.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from datasets import IGNORE_INDEX, SegDataset
from datasets.base import die_with_parent, worker_init

from .distributed import all_reduce_sum, gather_lists
from .metrics import confusion_matrix
from .protocols import BOUNDARY_DILATION_RATIO, NSD_TOLERANCE, get_protocol, score_case, summarize


class Item(NamedTuple):
    """One predicted item: its case id, slice index, prediction ``[H,W]`` uint8 and label ``[H,W]``."""

    case: str
    index: int
    pred: np.ndarray
    label: np.ndarray


@dataclass(frozen=True)
class Case:
    """One reassembled case: the dataset index of its first item, its id, prediction and labels (an
    image ``[H,W]``, or a volume ``[D,H,W]`` in slice order)."""

    position: int
    name: str
    pred: np.ndarray
    gt: np.ndarray


@dataclass(frozen=True)
class Scoring:
    """A case handed to the pool: its position and id, the ground-truth size of each class id and one
    future per protocol (its rows)."""

    position: int
    name: str
    gt_size: np.ndarray
    rows: list[Future]


class _Inline(Executor):
    """Runs submitted calls immediately (``workers=0``)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def shard(dataset: SegDataset, rank: int, world: int) -> list[int]:
    """Indices of the cases that rank ``rank`` of ``world`` evaluates (whole cases, round-robin)."""
    if world == 1:
        return list(range(len(dataset)))
    if not dataset.volumetric:
        return list(range(rank, len(dataset), world))
    number: dict[str, int] = {}
    keys = [number.setdefault(dataset.case_of(i), len(number)) for i in range(len(dataset))]
    return [i for i, k in enumerate(keys) if k % world == rank]


def resolve_workers(workers: int | str) -> int:
    if workers == "auto":
        return min(len(os.sched_getaffinity(0)), 8)
    return int(workers)


def make_pool(workers: int) -> Executor:
    """``workers`` spawned processes that exit with this one, even when it is killed (no orphans);
    inline scoring otherwise."""
    if workers > 0:
        return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=die_with_parent)
    return _Inline()


def predict_batch(
    model: nn.Module, image: torch.Tensor, size: Sequence[int], *, amp: bool, channels_last: bool
) -> torch.Tensor:
    """Predicted labels ``[B,H,W]`` of ``image`` at the label size ``size`` (logits resized first)."""
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    device = image.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        logits = model(image)["logits"]
    if logits.shape[-2:] != tuple(size):
        logits = F.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return logits.argmax(1)


def predictions(
    model: nn.Module,
    loader: DataLoader,
    confusion: torch.Tensor,
    *,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> Iterator[Item]:
    """The loader's items with their predictions, in loader order; adds each batch to ``confusion``
    (``[K,K]`` on ``device``, in place)."""
    for batch in loader:
        image = batch["image"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        pred = predict_batch(model, image, label.shape[-2:], amp=amp, channels_last=channels_last)
        confusion += confusion_matrix(pred, label, confusion.shape[0], ignore_index=IGNORE_INDEX)
        columns = (
            batch["case"],
            batch["index"].tolist(),
            pred.to(torch.uint8).cpu().numpy(),
            label.cpu().numpy(),
        )
        yield from map(Item._make, zip(*columns, strict=True))


def reassemble(items: Iterable[Item], positions: Iterable[int], *, volumetric: bool) -> Iterator[Case]:
    """Group contiguous items of one case into a :class:`Case`; ``positions``: the dataset index of
    each item. A volumetric case's slices are stacked in slice-index order."""
    located = zip(positions, items, strict=True)
    for name, group in itertools.groupby(located, key=lambda pair: pair[1].case):
        members = list(group)
        slices = sorted((item for _, item in members), key=lambda item: item.index)
        pred, gt = np.stack([s.pred for s in slices]), np.stack([s.label for s in slices])
        if not volumetric:
            pred, gt = pred[0], gt[0]
        yield Case(members[0][0], name, pred, gt)


def gt_sizes(gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Ground-truth pixels/voxels of each class id in ``gt`` (``IGNORE_INDEX`` excluded)."""
    return np.bincount(gt[gt != IGNORE_INDEX].ravel(), minlength=num_classes)


def submit(
    pool: Executor,
    case: Case,
    protocols: Sequence[str],
    *,
    spacing: Sequence[float] | None,
    num_classes: int,
    settings: Mapping[str, Any],
) -> Scoring:
    """Score ``case`` under each protocol in ``pool`` (``settings``: ``score_case`` keywords)."""
    rows = [
        pool.submit(score_case, protocol, case.pred, case.gt, spacing=spacing, **settings)
        for protocol in protocols
    ]
    return Scoring(case.position, case.name, gt_sizes(case.gt, num_classes), rows)


def gather(scorings: Sequence[Scoring], k: int) -> list[dict[str, Any]]:
    """Protocol ``k``'s rows of every case, each with its ``case`` and ``gt_size``, in dataset order
    over every DDP rank."""
    rows = [
        (s.position, {"case": s.name, **row, "gt_size": int(s.gt_size[row["class"]])})
        for s in scorings
        for row in s.rows[k].result()
    ]
    return [row for _, row in sorted(gather_lists(rows), key=lambda r: r[0])]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: SegDataset,
    *,
    protocols: Sequence[str],
    eval_classes: Sequence[int] | None,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    amp: bool = True,
    channels_last: bool = True,
    workers: int | str = 0,
    connectivity: int = 1,
    nsd_tolerance: float | Mapping[int, float] = NSD_TOLERANCE,
    dilation_ratio: float = BOUNDARY_DILATION_RATIO,
    rank: int = 0,
    world: int = 1,
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Score ``model`` on ``dataset``; returns one metrics block per protocol (same predictions).

    ``nsd_tolerance``/``dilation_ratio``: see ``bench.protocols.metric_settings`` (from the data config).
    ``subsets``: class subsets ``{name: [class id]}`` averaged into each block's ``subsets``; default:
    the dataset's ``eval_subsets`` (none: ``{}``). A model trained on another dataset passes that
    one's subsets (Synthia's mIoU16/mIoU13 when evaluated on Cityscapes).

    Under DDP each rank predicts its shard of whole cases; the confusion matrix is summed and the
    per-case rows gathered (in dataset order), so every rank returns the same metrics."""
    for protocol in protocols:
        get_protocol(protocol)
    if len(dataset) == 0:
        raise ValueError(f"the evaluation split {dataset.split!r} is empty")
    num_classes = dataset.num_classes
    classes = list(range(num_classes)) if eval_classes is None else [int(c) for c in eval_classes]
    subsets = dataset.eval_subsets if subsets is None else subsets
    settings = {
        "classes": classes,
        "ignore_index": IGNORE_INDEX,
        "connectivity": connectivity,
        "nsd_tolerance": nsd_tolerance,
        "dilation_ratio": dilation_ratio,
    }
    indices = shard(dataset, rank, world)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init,
    )
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    pool = make_pool(resolve_workers(workers))
    try:
        items = predictions(model, loader, confusion, device=device, amp=amp, channels_last=channels_last)
        scorings = [
            submit(
                pool,
                case,
                protocols,
                spacing=dataset.spacing(case.name),
                num_classes=num_classes,
                settings=settings,
            )
            for case in reassemble(items, indices, volumetric=dataset.volumetric)
        ]
        per_protocol = [gather(scorings, k) for k in range(len(protocols))]
        all_reduce_sum(confusion)
    finally:
        pool.shutdown(cancel_futures=True)
        model.train(was_training)
    cm = confusion.cpu().numpy()
    names = list(dataset.class_names)
    return [
        summarize(protocol, rows, class_names=names, units=dataset.units, confusion=cm, subsets=subsets)
        for protocol, rows in zip(protocols, per_protocol, strict=True)
    ]
