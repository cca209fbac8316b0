"""Evaluation: predict the test split, reassemble cases, score them with named protocols.

Slices of one case arrive contiguously (the dataset contract); logits are resized to the label's
native resolution before the argmax. The dataset-level confusion matrix is accumulated on the
device; per-case metrics (DSC, IoU, HD95, NSD, ASSD with the case's spacing, Boundary IoU counts)
are computed on the CPU by
``bench.protocols.score_case``, in worker processes when ``workers > 0``, while the GPU keeps
predicting the next cases.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

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
) -> list[dict[str, Any]]:
    """Score ``model`` on ``dataset``; returns one metrics block per protocol (same predictions).

    ``nsd_tolerance``/``dilation_ratio``: see ``bench.protocols.metric_settings`` (from the data config).

    Under DDP each rank predicts its shard of whole cases; the confusion matrix is summed and the
    per-case rows gathered (in dataset order), so every rank returns the same metrics."""
    for protocol in protocols:
        get_protocol(protocol)
    if len(dataset) == 0:
        raise ValueError(f"the evaluation split {dataset.split!r} is empty")
    num_classes = dataset.num_classes
    classes = list(range(num_classes)) if eval_classes is None else [int(c) for c in eval_classes]
    was_training = model.training
    model.eval()
    indices = shard(dataset, rank, world)
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init,
    )
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    n = resolve_workers(workers)
    pool = _Inline()
    if n > 0:  # workers exit with this process, even when it is killed (no orphans)
        pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=die_with_parent)
    futures: list[tuple[int, str, list[Future]]] = []  # (position of the case's first item, case, rows)
    current: str | None = None
    slices: list[tuple[int, np.ndarray, np.ndarray]] = []
    position = iter(indices)
    first = 0

    def flush() -> None:
        if current is None:
            return
        slices.sort(key=lambda s: s[0])
        pred = np.stack([s[1] for s in slices])
        gt = np.stack([s[2] for s in slices])
        if not dataset.volumetric:
            pred, gt = pred[0], gt[0]
        spacing = dataset.spacing(current)
        futures.append(
            (
                first,
                current,
                [
                    pool.submit(
                        score_case,
                        protocol,
                        pred,
                        gt,
                        classes=classes,
                        spacing=spacing,
                        connectivity=connectivity,
                        nsd_tolerance=nsd_tolerance,
                        dilation_ratio=dilation_ratio,
                        ignore_index=IGNORE_INDEX,
                    )
                    for protocol in protocols
                ],
            )
        )

    try:
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            label = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(image)["logits"]
            if logits.shape[-2:] != label.shape[-2:]:
                logits = F.interpolate(
                    logits.float(), size=label.shape[-2:], mode="bilinear", align_corners=False
                )
            pred = logits.argmax(1)
            cm += confusion_matrix(pred, label, num_classes, ignore_index=IGNORE_INDEX)
            pred_np = pred.to(torch.uint8).cpu().numpy()
            label_np = label.cpu().numpy()
            for case, index, p, g in zip(
                batch["case"], batch["index"].tolist(), pred_np, label_np, strict=True
            ):
                pos = next(position)
                if case != current:
                    flush()
                    current, slices, first = case, [], pos
                slices.append((index, p, g))
        flush()
        per_protocol = []
        for k in range(len(protocols)):
            rows = [(pos, {"case": case, **row}) for pos, case, futs in futures for row in futs[k].result()]
            per_protocol.append([row for _, row in sorted(gather_lists(rows), key=lambda r: r[0])])
        all_reduce_sum(cm)
    finally:
        pool.shutdown(cancel_futures=True)
        model.train(was_training)
    confusion = cm.cpu().numpy()
    return [
        summarize(
            protocol, rows, class_names=list(dataset.class_names), units=dataset.units, confusion=confusion
        )
        for protocol, rows in zip(protocols, per_protocol, strict=True)
    ]
