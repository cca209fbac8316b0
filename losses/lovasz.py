"""Lovász-Softmax loss (Berman et al. 2018): the Lovász extension of the Jaccard loss per class."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import SegLoss
from .registry import register_loss


def lovasz_grad(fg_sorted: Tensor, smooth: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss (Berman et al., Alg. 1).

    ``fg_sorted`` holds 0/1 foreground flags along the last dim, ordered by decreasing error;
    ``smooth`` is added to every intersection and union. With ``P`` foreground pixels and ``F_k``,
    ``B_k`` the foreground and other pixels among the first ``k``, the Jaccard loss of the first
    ``k`` is ``J_k = 1 - (I_k + s)/(U_k + s)``, ``I_k = P - F_k``, ``U_k = P + B_k``, and the
    gradient is ``J_k - J_(k-1)`` (``J_0 = 0``). It is computed in closed form, without subtracting
    neighbours: ``1/(U_k + s)`` at a foreground pixel, ``(I_k + s)/((U_k - 1 + s)(U_k + s))`` at
    another one (and ``1/(U_1 + s)`` at the first). The counts are exact integers, so a float32
    result (``dtype``) is accurate to its rounding for any number of pixels.
    """
    fg = fg_sorted.bool()
    n = fg.shape[-1]
    count = torch.int32 if n < 2**31 else torch.int64
    f = fg.cumsum(-1, dtype=count)
    total = f[..., -1:]
    inter = (total - f).to(dtype) + smooth
    union = (torch.arange(1, n + 1, device=fg.device, dtype=count) + (total - f)).to(dtype) + smooth
    grad = torch.where(fg, 1 / union, inter / ((union - 1) * union))
    grad[..., 0] = 1 / union[..., 0]  # J_1 - J_0 = (U_1 - I_1)/(U_1 + s), U_1 - I_1 = 1; also when P + s = 0
    return grad


@register_loss(
    "lovasz",
    category="region",
    reference=(
        "Berman, Rannen Triki, Blaschko. The Lovász-Softmax Loss: A Tractable Surrogate for the "
        "Optimization of the Intersection-over-Union Measure in Neural Networks. CVPR 2018"
    ),
    ranges={"smooth": (0, None)},
    choices={"classes": ("present", "all")},
)
class LovaszSoftmaxLoss(SegLoss):
    """Lovász-Softmax: per class, the Lovász extension of the Jaccard loss on the errors ``|t - p|``.

    For class ``c`` the pixel errors ``m_i(c) = |t_i^c - p_i^c|`` (softmax ``p``) are sorted in
    decreasing order and dotted with the Lovász gradient of the Jaccard loss (survey eq. 12, Berman
    Alg. 1). ``batch=True`` (the original's ``per_image=False``, its default) sorts all pixels of the
    batch together; ``False`` computes the loss per image and averages over the images that have a
    valid pixel. ``classes="present"`` (default) averages over the classes present in the target (of
    the batch, or of the image); ``"all"`` over all classes, so an absent class costs its largest
    predicted probability. ``include_background=False`` leaves class 0 out. ``smooth`` is added to
    the intersection and the union of every prefix (``1 - (I + s)/(U + s)``); the original has none
    (``s=0``, the default: the union of a prefix is never 0). Ignored pixels are sorted last with zero
    error, which leaves the value and the gradient unchanged and keeps shapes static; presence is a
    0/1 weight on the device, so there is no host sync. One sort orders every class (and image) at
    once, on the errors' float32 bit patterns as integers (the same order for errors >= 0, and a
    faster sort than on floats). An all-ignored batch gives 0.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        classes: Literal["present", "all"] = "present",
        smooth: float = 0.0,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not include_background and num_classes < 2:
            raise ValueError(
                f"loss 'lovasz': include_background=False needs num_classes >= 2, got {num_classes}"
            )
        self.classes, self.smooth, self.batch = classes, float(smooth), bool(batch)
        self.first = 0 if include_background else 1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, fg = self.valid(target), self.one_hot(target)[:, self.first :]
        errors = (fg - self.probs(logits, target)[:, self.first :]).abs()
        k, groups = fg.shape[1], 1 if self.batch else target.shape[0]
        errors = errors.transpose(0, 1).reshape(k, groups, -1)  # [K, G, N]
        fg = fg.transpose(0, 1).reshape(k, groups, -1)
        valid = valid.reshape(groups, -1)
        # ascending sort of -bits: decreasing error (bits of floats >= 0 are ordered as the floats);
        # ignored pixels get +1 so they come after every valid error
        key = torch.where(valid, -errors.detach().view(torch.int32), 1)
        order = key.sort(-1).indices
        grad = lovasz_grad(fg.bool().gather(-1, order), self.smooth, torch.float32)
        losses = (errors.gather(-1, order) * grad).sum(-1).T  # [G, K]
        if self.classes == "present":
            weight = (fg.sum(-1) > 0).T.float()
        else:
            weight = valid.any(-1, keepdim=True).float().expand_as(losses)
        per_group = (losses * weight).sum(-1) / weight.sum(-1).clamp_min(1)
        has_valid = valid.any(-1).float()
        return (per_group * has_valid).sum() / has_valid.sum().clamp_min(1)
