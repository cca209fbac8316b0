"""Pixel-level losses (survey §2.1): cross-entropy and focal."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SegLoss, as_class_vector
from .registry import register_loss


@register_loss(
    "ce",
    category="pixel",
    reference="Cross-entropy; weighted variant as in survey eq. 2",
)
class CrossEntropyLoss(SegLoss):
    """Cross-entropy, optionally class-weighted (weighted CE, survey eq. 1–2).

    Unweighted: mean of ``-log p_t`` over the valid pixels. Weighted: ``sum(w_t · -log p_t) /
    sum(w_t)`` over the valid pixels, the convention of ``torch.nn.functional.cross_entropy``.
    ``label_smoothing`` follows torch. All-ignored batch: 0 (torch's own ``mean`` gives NaN).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        w = as_class_vector(class_weights, num_classes, "class_weights", "ce")
        self.register_buffer("class_weights", w, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        per_pixel = F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        valid = self.valid(target)
        if self.class_weights is None:
            norm = valid.sum()
        else:
            norm = (self.class_weights[self.safe_target(target)] * valid).sum()
        return per_pixel.sum() / norm.clamp_min(torch.finfo(torch.float32).tiny)


@register_loss(
    "focal",
    category="pixel",
    reference="Lin, Goyal, Girshick, He, Dollár. Focal Loss for Dense Object Detection. ICCV 2017",
    original="binary",
    ranges={"gamma": (0, None), "alpha": (0, None)},
)
class FocalLoss(SegLoss):
    """Softmax focal loss ``-α_t (1 - p_t)^γ log p_t``, mean over valid pixels (survey eq. 4).

    The original is a per-anchor sigmoid loss with γ=2 and a foreground weight α=0.25; here it is
    the multi-class softmax form the survey writes, with Lin's γ=2 as default and ``alpha`` an
    optional per-class weight list (``None``: all 1). γ=0 and no α equal cross-entropy. The mean is
    over valid pixels (not all pixels), so ignored pixels do not dilute it.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        gamma: float = 2.0,
        alpha: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)
        self.register_buffer("alpha", as_class_vector(alpha, num_classes, "alpha", "focal"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = self.valid(target)
        t = self.safe_target(target).unsqueeze(1)
        logp_t = logits.float().log_softmax(1).gather(1, t).squeeze(1)
        p_t = logp_t.exp()
        # clamp: keeps d/dp (1-p)^γ finite at p_t = 1 when γ < 1
        loss = -((1 - p_t).clamp_min(1e-12) ** self.gamma) * logp_t
        if self.alpha is not None:
            loss = loss * self.alpha[t.squeeze(1)]
        return (loss * valid).sum() / valid.sum().clamp_min(1)
