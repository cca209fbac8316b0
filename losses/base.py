"""Shared conventions of every loss: shapes, the ignore mask, probabilities and one-hot targets.

Conventions: ``logits`` are ``[B,C,H,W]`` (any float dtype; losses compute in float32, also under
autocast), ``target`` is ``[B,H,W]`` int64 with class ids in ``[0, C)`` or ``ignore_index``.
Ignored pixels are removed by *multiplying* with a 0/1 mask (static shapes, no host syncs), so they
have no influence on the value or the gradient. A loss returns a scalar; an all-ignored batch gives
0 with a valid graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SegLoss(nn.Module):
    """Base class holding ``num_classes`` and ``ignore_index`` with the common tensor helpers."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def valid(self, target: Tensor) -> Tensor:
        """``[B,H,W]`` bool mask of the pixels that count."""
        return target != self.ignore_index

    def safe_target(self, target: Tensor) -> Tensor:
        """Target with ignored pixels set to class 0 (use together with ``valid``)."""
        return torch.where(self.valid(target), target, torch.zeros_like(target))

    def one_hot(self, target: Tensor) -> Tensor:
        """``[B,C,H,W]`` float one-hot target; ignored pixels are all-zero."""
        b, h, w = target.shape
        out = torch.zeros(b, self.num_classes, h, w, device=target.device)
        return out.scatter_(1, self.safe_target(target).unsqueeze(1), self.valid(target).unsqueeze(1).float())

    def probs(self, logits: Tensor, target: Tensor) -> Tensor:
        """Softmax probabilities in float32, zeroed at ignored pixels."""
        return logits.float().softmax(1) * self.valid(target).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}"


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask`` (same shape); 0 with a valid graph when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def as_class_vector(weight, num_classes: int, field: str, name: str) -> Tensor | None:
    """Turn an optional per-class weight list into a float tensor, checking its length."""
    if weight is None:
        return None
    w = torch.as_tensor(list(weight), dtype=torch.float32)
    if w.shape != (num_classes,):
        raise ValueError(f"loss {name!r}: {field} has {w.numel()} entries, expected {num_classes}")
    if (w < 0).any():
        raise ValueError(f"loss {name!r}: {field} must be non-negative, got {w.tolist()}")
    return w
