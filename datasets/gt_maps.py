"""Ground-truth maps made in the loader: a dataset wrapper adding maps of each item's label.

A loss declares the maps of the target it needs (``losses.loss_info(name).gt_maps(hparams)``, names
of ``losses.distance.GT_MAPS``); :class:`WithGTMaps` computes them in the DataLoader workers, once
per sample and after augmentation, so that the training step receives them with the batch instead
of running EDTs on the host inside the loss. The maps are those the loss would compute from the
same label (the same function, per image), so the loss value is the same either way.

>>> train = WithGTMaps(datasets.create_dataset("synapse", ...), ("signed_distance",))
>>> train[0]["signed_distance"].shape                          # [num_classes, H, W] float32
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from losses.distance import GT_MAPS, gt_maps


class WithGTMaps(Dataset):
    """``dataset[i]`` plus one float32 tensor per map name, computed from the item's ``label``.

    ``num_classes`` defaults to the dataset's. Other attributes are the wrapped dataset's."""

    def __init__(self, dataset: Dataset, maps: Sequence[str], num_classes: int | None = None) -> None:
        unknown = sorted(set(maps) - set(GT_MAPS))
        if unknown:
            raise ValueError(f"unknown ground-truth maps {unknown}; known: {sorted(GT_MAPS)}")
        self.dataset, self.maps = dataset, tuple(maps)
        self.num_classes = int(dataset.num_classes if num_classes is None else num_classes)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        label = torch.as_tensor(item["label"])[None]
        for name, value in gt_maps(label, self.maps, self.num_classes).items():
            item[name] = value[0]
        return item

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
