"""Exact Euclidean distance maps for the distance-based losses, batched, on CPU or CUDA.

Convention (scipy's ``distance_transform_edt``): the map of a mask holds, at every True pixel, the
Euclidean distance (in ``spacing`` units per axis, default 1) to the nearest False pixel, and 0 at
False pixels. Two cases are pinned down explicitly, identically on every backend:

- empty mask (no True pixel): all zeros, as in scipy;
- full mask (no False pixel): the distance to the nearest position just outside the array, i.e. the
  array is taken to be surrounded by background. (scipy measures to a phantom point and returns
  ``[1, 1.41, 2.24, …]`` for a row of ones; ``edt`` returns inf.)

Label maps ``[B,*S]`` hold class ids; values outside ``[0, num_classes)`` (e.g. ``ignore_index``)
belong to no class, so for every class they count as background.

Backends: CPU tensors use the ``edt`` package (exact, float32, threads = ``torch.get_num_threads()``;
its ``black_border=False`` is scipy's border rule) and fall back to scipy when ``edt`` is missing.
CUDA tensors use cupyx (or cuCIM) when importable (``pip install -e '.[gpu]'``; tensors shared by
DLPack, kernels on torch's current stream); otherwise they are copied to the CPU and back, which
synchronises the stream. Results are float32 tensors on the input's device, never part of a graph.

Ground-truth maps: :data:`GT_MAPS` names the maps of a *target* that losses declare
(``register_loss(..., maps=...)``) so that the data pipeline can make them in the loader workers
(``datasets.gt_maps``); :func:`gt_maps` computes them, the same function either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

try:
    import edt as _edt_lib
except ImportError:  # pragma: no cover - edt is a hard dependency; scipy is the fallback
    _edt_lib = None


def _find_gpu_edt() -> Callable | None:
    """The CUDA EDT (cupyx, else cuCIM), or ``None`` when neither is importable."""
    try:
        from cupyx.scipy.ndimage import distance_transform_edt
    except ImportError:
        try:
            from cucim.core.operations.morphology import distance_transform_edt
        except ImportError:
            return None
    return distance_transform_edt


_GPU_EDT = _find_gpu_edt()


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(s > 0 and np.isfinite(s) for s in sp):
        raise ValueError(f"spacing={spacing!r} must hold {ndim} positive numbers, one per spatial axis")
    return sp


def _check(x: Tensor, name: str) -> None:
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} must be [N,H,W] or [N,D,H,W], got shape {tuple(x.shape)}")


def border_distance(shape: Sequence[int], spacing: Sequence[float] | None = None, device=None) -> Tensor:
    """Distance of every pixel of an array of ``shape`` to the nearest position just outside it."""
    sp = _spacing(spacing, len(shape))
    out = None
    for axis, (n, s) in enumerate(zip(shape, sp, strict=True)):
        i = torch.arange(n, device=device, dtype=torch.float32)
        d = torch.minimum(i + 1, n - i) * s
        d = d.view([-1 if k == axis else 1 for k in range(len(shape))])
        out = d if out is None else torch.minimum(out, d)
    return out.expand(*shape).contiguous()


def _edt(mask: Tensor, spacing: tuple[float, ...]) -> Tensor:
    """EDT of one mask that has both True and False pixels, on the mask's device."""
    if mask.is_cuda:
        import cupy

        stream = torch.cuda.current_stream(mask.device).cuda_stream
        with cupy.cuda.Device(mask.device.index), cupy.cuda.ExternalStream(stream):
            # shared, not copied, both ways (DLPack); cupy's kernels run on torch's current stream
            d = _GPU_EDT(
                cupy.from_dlpack(mask.contiguous().view(torch.uint8)),
                sampling=spacing,
                float64_distances=False,
            )
            return torch.from_dlpack(d.astype(cupy.float32, copy=False))
    m = mask.numpy()
    if _edt_lib is not None:
        d = _edt_lib.edt(m, anisotropy=spacing, black_border=False, parallel=torch.get_num_threads())
    else:
        d = ndimage.distance_transform_edt(m, sampling=spacing)
    return torch.from_numpy(np.asarray(d, dtype=np.float32))


def _workspace(x: Tensor) -> Tensor:
    """Where the transforms run: the tensor itself on CUDA with a GPU EDT, else a CPU copy (syncs)."""
    return x if x.is_cuda and _GPU_EDT is not None else x.cpu()


def _dense(x: Tensor) -> bool:
    """Whether the maps of ``x`` take the path without host syncs: no branch on the data, one EDT per
    possible class, degenerate masks fixed on the device (CUDA; tests switch it on for the CPU)."""
    return x.is_cuda


def _any_edt(mask: Tensor, spacing: tuple[float, ...]) -> Tensor:
    """EDT of any mask without a host sync: empty → zeros, full → the border distance."""
    flat = mask.flatten()
    border = border_distance(mask.shape, spacing, mask.device)
    return torch.where(flat.all(), border, torch.where(flat.any(), _edt(mask, spacing), 0.0))


@torch.no_grad()
def edt_batch(masks: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """Distance of each True pixel to the nearest False pixel, per mask: bool ``[N,H,W]`` or
    ``[N,D,H,W]`` → float32 of the same shape and device. Empty masks give zeros, full masks the
    distance to the array border (see the module docstring)."""
    _check(masks, "masks")
    sp = _spacing(spacing, masks.dim() - 1)
    work = _workspace(masks.bool())
    if _dense(work):
        return torch.stack([_any_edt(m, sp) for m in work]).to(masks.device)
    out = torch.zeros(work.shape, dtype=torch.float32, device=work.device)
    flat = work.flatten(1)
    for i, (some, every) in enumerate(zip(flat.any(1).tolist(), flat.all(1).tolist(), strict=True)):
        if every:
            out[i] = border_distance(work.shape[1:], sp, work.device)
        elif some:
            out[i] = _edt(work[i], sp)
    return out.to(masks.device)


@torch.no_grad()
def label_distance(
    labels: Tensor, spacing: Sequence[float] | None = None, num_classes: int | None = None
) -> Tensor:
    """Distance of every pixel to the nearest pixel with a different label, per image: int ``[B,*S]``
    → float32 ``[B,*S]``. At a pixel of class c this is the EDT of class c's mask ("inside"
    distance; 1 on the region's rim). An image holding a single label gives the border distance.
    One multi-label ``edt`` call per image on CPU; on CUDA one EDT per label present, or, given
    ``num_classes``, without host syncs, one per class in ``[0, num_classes)`` and one for all other
    values together (the same map unless two different out-of-range values touch)."""
    _check(labels, "labels")
    sp = _spacing(spacing, labels.dim() - 1)
    work = _workspace(labels)
    if num_classes is not None and _dense(work):
        other = (work < 0) | (work >= num_classes)
        out = torch.zeros(work.shape, dtype=torch.float32, device=work.device)
        for b in range(work.shape[0]):
            for m in [*(work[b] == c for c in range(num_classes)), other[b]]:
                out[b] = torch.where(m, _any_edt(m, sp), out[b])
        return out.to(labels.device)
    out = torch.empty(work.shape, dtype=torch.float32, device=work.device)
    for b in range(work.shape[0]):
        lab = work[b]
        lo, hi = int(lab.min()), int(lab.max())
        if lo == hi:
            out[b] = border_distance(lab.shape, sp, work.device)
        elif not lab.is_cuda and _edt_lib is not None:
            shifted = (lab - lo + 1).numpy().astype(np.uint32 if hi - lo < 2**32 - 1 else np.uint64)
            d = _edt_lib.edt(shifted, anisotropy=sp, black_border=False, parallel=torch.get_num_threads())
            out[b] = torch.from_numpy(d)
        else:
            for value in torch.unique(lab).tolist():
                m = lab == value
                out[b] = torch.where(m, _edt(m, sp), out[b])
    return out.to(labels.device)


def _class_maps(
    labels: Tensor, num_classes: int, spacing: Sequence[float] | None, combine: Callable
) -> Tensor:
    """``[B,C,*S]`` maps, zero for classes absent from an image; for each (image, present class)
    ``combine(mask, inside, outside)`` with the image's ``label_distance`` and ``EDT(~mask)``
    (zeros when the class fills the image). One EDT per (image, present class), small temporaries."""
    _check(labels, "labels")
    sp = _spacing(spacing, labels.dim() - 1)
    work = _workspace(labels)
    inside = label_distance(work, sp, num_classes)
    out = torch.zeros((work.shape[0], num_classes, *work.shape[1:]), dtype=torch.float32, device=work.device)
    if _dense(work):  # every class, absent ones zeroed on the device
        for b in range(work.shape[0]):
            for c in range(num_classes):
                mask = work[b] == c
                combined = combine(mask, inside[b], _any_edt(~mask, sp))
                out[b, c] = torch.where(mask.any(), combined, 0.0)
        return out.to(labels.device)
    ids = torch.where((work >= 0) & (work < num_classes), work, num_classes).flatten(1)
    counts = torch.zeros(work.shape[0], num_classes + 1, dtype=torch.long, device=work.device)
    counts = counts.scatter_add_(1, ids, torch.ones_like(ids))[:, :num_classes].tolist()
    pixels = work[0].numel()
    for b, per_class in enumerate(counts):
        for c, count in enumerate(per_class):
            if count:
                mask = work[b] == c
                outside = _edt(~mask, sp) if count < pixels else torch.zeros_like(inside[b])
                out[b, c] = combine(mask, inside[b], outside)
    return out.to(labels.device)


@torch.no_grad()
def signed_distance_maps(labels: Tensor, num_classes: int, spacing: Sequence[float] | None = None) -> Tensor:
    """Kervadec et al.'s signed maps ``[B,C,*S]``: ``EDT(~m)·~m − (EDT(m) − 1)·m`` per class mask m
    — positive outside, ≤ 0 inside, 0 on the inner rim (with unit spacing); a class absent from the
    image gets all zeros ("another class supervises those pixels")."""
    return _class_maps(labels, num_classes, spacing, lambda m, inside, outside: outside - (inside - 1) * m)


@torch.no_grad()
def unsigned_distance_maps(
    labels: Tensor, num_classes: int, spacing: Sequence[float] | None = None
) -> Tensor:
    """Distance to the class boundary on both sides, ``EDT(m) + EDT(~m)`` per class mask m:
    ``[B,C,*S]``. A class that is absent or fills the whole image has no boundary: all zeros (the
    rule of Karimi & Salcudean's code and MONAI's ``HausdorffDTLoss``)."""
    return _class_maps(
        labels, num_classes, spacing, lambda m, inside, outside: (inside * m + outside) * (~m).any()
    )


def _label_distance_map(labels: Tensor, num_classes: int) -> Tensor:
    return label_distance(labels, num_classes=num_classes)


#: Maps of a target ``[B,*S]`` that a loss may declare (``register_loss(maps=...)``), each a function
#: ``(labels, num_classes) -> float32`` in pixels, computed per image (so a batch of maps is the batch
#: of the images' maps):
#: ``label_distance`` ``[B,*S]`` — distance to the nearest pixel of another label (1 on a region's rim);
#: ``signed_distance`` ``[B,C,*S]`` — Kervadec's signed maps; ``unsigned_distance`` ``[B,C,*S]`` —
#: distance to each class's boundary on both sides.
GT_MAPS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "label_distance": _label_distance_map,
    "signed_distance": signed_distance_maps,
    "unsigned_distance": unsigned_distance_maps,
}


def gt_maps(labels: Tensor, names: Sequence[str], num_classes: int) -> dict[str, Tensor]:
    """The maps ``names`` (keys of :data:`GT_MAPS`) of a batch of label maps ``[B,*S]``."""
    unknown = sorted(set(names) - set(GT_MAPS))
    if unknown:
        raise ValueError(f"unknown ground-truth maps {unknown}; known: {sorted(GT_MAPS)}")
    return {name: GT_MAPS[name](labels, num_classes) for name in names}
