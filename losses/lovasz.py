"""Lovász-Softmax loss (Berman et al. 2018): the Lovász extension of the Jaccard loss per class."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import SegLoss
from .registry import register_loss

#: the float32 bit pattern of 1.0, the largest error
_ONE_BITS = 0x3F800000


def lovasz_grad(fg_sorted: Tensor, smooth: float = 0.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gradient of the Lovász extension of the Jaccard loss (Berman et al., Alg. 1).

    ``fg_sorted`` holds 0/1 foreground flags along the last dim, ordered by decreasing error;
    ``smooth`` is added to every intersection and union. With ``P`` foreground pixels and ``F_k``,
    ``B_k`` the foreground and other pixels among the first ``k``, the Jaccard loss of the first
    ``k`` is ``J_k = 1 - (I_k + s)/(U_k + s)``, ``I_k = P - F_k``, ``U_k = P + B_k``, and the
    gradient is ``J_k - J_(k-1)`` (``J_0 = 0``). It is computed in closed form, without subtracting
    neighbours: ``1/(U_k + s)`` at a foreground pixel, ``(I_k + s)/((U_k - 1 + s)(U_k + s))`` at
    another one (and ``1/(U_1 + s)`` at the first). The counts are exact integers (float32 up to 2**24
    pixels, float64 beyond), so a float32 result (``dtype``) is accurate to its rounding for any number of
    pixels.
    """
    fg = fg_sorted.bool()
    n = fg.shape[-1]
    # counts are integers <= n: exact in float32 up to 2**24 (a float cumsum is several times faster
    # than an integer one on the CPU), in float64 beyond
    count = torch.float32 if n <= 2**24 else torch.float64
    seen = fg.to(count).cumsum_(-1)  # F_k
    inter = seen[..., -1:] - seen  # P - F_k: the foreground after position k
    union = inter + torch.arange(1, n + 1, device=fg.device, dtype=count)
    if smooth:
        inter += smooth
        union += smooth
    inter, union = inter.to(dtype), union.to(dtype)
    # 1/U_k on the foreground, I_k/((U_k - 1) U_k) elsewhere; J_1 - J_0 = 1/U_1 (also when P + s = 0)
    grad = torch.where(fg, 1.0, inter.div_(union - 1)).div_(union)
    grad[..., 0] = 1 / union[..., 0]
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
    0/1 weight on the device, so there is no host sync. The errors are sorted as their float32 bit
    patterns (integers: the same order for errors >= 0, and a faster sort than on floats), every
    class (and image) in one batched sort on CUDA, row by row on the CPU (:func:`sort_rows`). The
    Lovász weights are scattered back to the pixels, and since the loss is linear in ``p`` given
    the order, its gradient is that weight with the error's sign: no gather or scatter in the
    backward pass. An all-ignored batch gives 0.
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
        valid = self.valid(target)  # [B,H,W]
        probs = logits.float().softmax(1)[:, self.first :]  # [B,K,H,W]
        k, groups = probs.shape[1], 1 if self.batch else target.shape[0]
        classes = torch.arange(self.first, self.num_classes, device=target.device).view(1, -1, 1, 1)
        fg = (target.unsqueeze(1) == classes) & valid.unsqueeze(1)
        # one row of [K*G, N] per class (and image) to sort. The key 2·(bits(1) - bits(error)) + fg
        # ascends with decreasing error (the bits of floats >= 0 are ordered as the floats) and
        # carries the foreground flag in its lowest bit, so the sorted keys hold the sorted flags;
        # ignored pixels get 2·(bits(1) + 1), after every valid error. All of it fits in int32.
        p = probs.detach()
        bits = torch.where(fg, 1 - p, p).view(torch.int32)
        key = bits.neg_().add_(_ONE_BITS).mul_(2).add_(fg)  # in place, no new int32 tensors
        key.masked_fill_(~valid.unsqueeze(1), (_ONE_BITS + 1) * 2)
        sorted_keys, order = sort_rows(key.transpose(0, 1).reshape(k * groups, -1))
        fg_sorted = (sorted_keys & 1).bool()
        grad = lovasz_grad(fg_sorted, self.smooth, torch.float32)  # [K*G, N], ignored pixels last
        # mean over the counted classes, then over the groups with a valid pixel: one coefficient per row
        valid_groups = valid.reshape(groups, -1).any(-1)  # [G]
        if self.classes == "present":
            counted = fg_sorted.any(-1).view(k, groups).float()
        else:
            counted = valid_groups.float().expand(k, groups)
        coef = counted / counted.sum(0).clamp_min(1) * (valid_groups / valid_groups.sum().clamp_min(1))
        grad = grad * coef.view(-1, 1)
        # sum(grad * error) with error = 1 - p on the foreground, p elsewhere: linear in p, so the
        # foreground's part is a constant and the slope is -grad there, +grad elsewhere
        constant = (grad * fg_sorted).sum()
        slope = torch.empty_like(grad).scatter_(-1, order, torch.where(fg_sorted, -grad, grad))
        slope = slope.view(k, *target.shape).transpose(0, 1) * valid.unsqueeze(1)  # [B,K,H,W]
        return (probs * slope).sum() + constant


def sort_rows(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Stable ascending sort of each row of the 2-D int32 ``keys`` (values, indices): one batched sort
    on CUDA; on the CPU a 1-D sort per row, several times faster there than torch's batched sort
    along a dim. Both give the same result (stable sort of integers)."""
    if keys.is_cuda:
        return keys.sort(dim=-1, stable=True)
    values, indices = torch.empty_like(keys), torch.empty(keys.shape, dtype=torch.long)
    for row, v, i in zip(keys.unbind(0), values.unbind(0), indices.unbind(0), strict=True):
        torch.sort(row, stable=True, out=(v, i))
    return values, indices
