"""Lovász-Softmax loss (Berman et al. 2018): the Lovász extension of the Jaccard loss per class."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import SegLoss
from .registry import register_loss


def lovasz_grad(fg_sorted: Tensor) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss (Berman et al., Alg. 1).

    ``fg_sorted`` holds 0/1 foreground flags along the last dim, ordered by decreasing error. The
    counts are accumulated in float64, so they stay exact far beyond 2^24 pixels (a float32 cumsum
    stops counting there). Returns float64 of the same shape.
    """
    fg = fg_sorted.double()
    total = fg.sum(-1, keepdim=True)
    intersection = total - fg.cumsum(-1)
    union = total + (1 - fg).cumsum(-1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)


@register_loss(
    "lovasz",
    category="region",
    reference=(
        "Berman, Rannen Triki, Blaschko. The Lovász-Softmax Loss: A Tractable Surrogate for the "
        "Optimization of the Intersection-over-Union Measure in Neural Networks. CVPR 2018"
    ),
)
class LovaszSoftmaxLoss(SegLoss):
    """Lovász-Softmax: per class, the Lovász extension of the Jaccard loss on the errors ``|t - p|``.

    For class ``c`` the pixel errors ``m_i(c) = |t_i^c - p_i^c|`` (softmax ``p``) are sorted in
    decreasing order and dotted with the Lovász gradient of the Jaccard loss (survey eq. 12, Berman
    Alg. 1). ``per_image=False`` (the original default) sorts all pixels of the batch together;
    ``True`` computes the loss per image and averages over the images that have a valid pixel.
    ``classes="present"`` (default) averages over the classes present in the target (of the batch,
    or of the image); ``"all"`` over all classes, so an absent class costs its largest predicted
    probability. Ignored pixels are sorted last with zero error, which leaves the value and the
    gradient unchanged and keeps shapes static; presence is a 0/1 weight on the device, so there is
    no host sync per class. An all-ignored batch gives 0.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        per_image: bool = False,
        classes: Literal["present", "all"] = "present",
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if classes not in ("present", "all"):
            raise ValueError(f"loss 'lovasz': classes={classes!r} must be 'present' or 'all'")
        self.per_image, self.classes = per_image, classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, fg = self.valid(target), self.one_hot(target)
        errors = (fg - self.probs(logits, target)).abs()
        groups = target.shape[0] if self.per_image else 1
        errors = errors.transpose(0, 1).reshape(self.num_classes, groups, -1)  # [C, G, N]
        fg = fg.transpose(0, 1).reshape(self.num_classes, groups, -1)
        valid = valid.reshape(groups, -1)
        # sort keys: ignored pixels get -1 so they come after every valid error (all >= 0)
        losses = []
        for c in range(self.num_classes):  # one class at a time keeps memory at one [G, N] sort
            _, order = torch.where(valid, errors[c], -1.0).sort(-1, descending=True)
            grad = lovasz_grad(fg[c].gather(-1, order)).float()
            losses.append((errors[c].gather(-1, order) * grad).sum(-1))
        losses = torch.stack(losses, -1)  # [G, C]
        if self.classes == "present":
            weight = (fg.sum(-1) > 0).T.float()
        else:
            weight = valid.any(-1, keepdim=True).float().expand_as(losses)
        per_group = (losses * weight).sum(-1) / weight.sum(-1).clamp_min(1)
        has_valid = valid.any(-1).float()
        return (per_group * has_valid).sum() / has_valid.sum().clamp_min(1)
