"""The dataset contract shared by every dataset.

Items are dicts: ``image`` float32 ``[C,H,W]`` (normalised), ``label`` int64 ``[H,W]`` train ids with
255 = ignore, ``case`` str (the unit of evaluation: a volume for Synapse, an image otherwise) and
``index`` int (slice position inside its case, 0 for 2D images). Slices of one case are contiguous
and in order in evaluation splits, so the evaluator can reassemble volumes; ``spacing(case)`` gives
mm per voxel in array axis order ``(z, y, x)`` when known, so HD95 can be reported in mm.

Augmentation (by default of the ``train_splits`` only) is deterministic per *sample draw*:
``dataset[i]`` for ``i >= len(dataset)`` reads sample ``i % len`` and seeds its augmentation with
``(seed, i)``; optional label noise (``label_noise``, see ``datasets.noise``) is drawn from the same
generator after augmentation.
A sampler that numbers its draws (see ``bench.train``) therefore reproduces every augmented batch
exactly after a resume, with any number of loader workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .noise import apply_label_noise, check_label_noise


class SegDataset(Dataset):
    """Base class: subclasses implement ``__len__``, ``load`` and (for training) ``augment``."""

    #: names of the classes with train ids 0..num_classes-1
    class_names: tuple[str, ...] = ()
    #: what HD95 is measured in: "mm" (spacing known), "voxel" (volume without spacing) or "px"
    units: str = "px"
    #: items are slices of 3D cases, scored as reassembled volumes
    volumetric: bool = False
    #: the splits that are augmented unless ``augment`` says otherwise
    train_splits: tuple[str, ...] = ("train",)
    #: class subsets whose means tables report, ``{name: [train id]}`` (Synthia's mIoU16/mIoU13); none here
    eval_subsets: Mapping[str, tuple[int, ...]] = {}

    def __init__(
        self,
        split: str,
        *,
        augment: bool | None = None,
        seed: int = 0,
        label_noise: Mapping[str, Any] | None = None,
    ) -> None:
        self.split = split
        self.augment_enabled = split in self.train_splits if augment is None else bool(augment)
        self.seed = seed
        self.label_noise = check_label_noise(label_noise)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self, idx: int) -> dict[str, Any]:
        """Sample ``idx`` as numpy: ``image`` float32 ``[C,H,W]``, ``label`` int ``[H,W]``, ``case``."""
        raise NotImplementedError

    def augment(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Random training augmentation of a loaded sample (identity by default)."""
        return sample

    def finalize(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Deterministic last step after augmentation, e.g. resizing to the input size (identity)."""
        return sample

    def case_of(self, idx: int) -> str:
        """Case id of item ``idx`` without loading it (volumetric datasets must override this)."""
        return str(idx)

    def spacing(self, case: str) -> tuple[float, ...] | None:
        """Physical size of a pixel/voxel of ``case`` in mm, in array axis order (None: unknown)."""
        return None

    def preflight(self) -> None:
        """Checks too slow for ``__init__``, run once on each split before training (e.g. opening
        every file, reading every evaluation label); raise naming the file and what to do. Cheap
        checks (layout, listed files, sidecars) belong in ``__init__``, the rest of the per-file ones
        in ``load``. None by default."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.load(int(i) % len(self))
        if self.augment_enabled:
            rng = np.random.default_rng([self.seed, int(i)])
            sample = self.augment(sample, rng)
            if self.label_noise:
                noisy = apply_label_noise(
                    sample["label"], rng, num_classes=self.num_classes, **self.label_noise
                )
                sample = {**sample, "label": noisy}
        sample = self.finalize(sample)
        out = dict(sample)
        out["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"], dtype=np.float32))
        out["label"] = torch.from_numpy(np.ascontiguousarray(sample["label"]).astype(np.int64))
        out.setdefault("index", 0)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # explicit: __getitem__ accepts any draw number, so the legacy protocol would never stop
        return (self[i] for i in range(len(self)))


def die_with_parent(poll_s: float = 1.0) -> None:
    """End this worker process as soon as its parent dies, even by SIGKILL (no orphans).

    On Linux the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG`` via ctypes); a
    daemon thread that polls the parent pid every ``poll_s`` seconds covers the other systems and the
    race of a parent that died before the call."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no libc prctl: the watchdog remains
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: exit with the parent process, one OpenCV thread per worker
    (workers are the parallelism)."""
    die_with_parent()
    cv2.setNumThreads(0)
