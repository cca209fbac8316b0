"""Pixel-level losses (survey §2.1): cross-entropy, TopK, focal, and OHEM cross-entropy."""

from __future__ import annotations

import math
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


@register_loss(
    "topk",
    category="pixel",
    reference="Wu, Shen, van den Hengel. Bridging Category-level and Instance-level Semantic Image "
    "Segmentation. arXiv 1605.06885, 2016 (bootstrapped CE)",
    ranges={"k": (0, 100)},
)
class TopKLoss(SegLoss):
    """TopK (bootstrapped) cross-entropy: mean CE over the k % of valid pixels with the highest CE.

    ``k=10`` as nnU-Net's TopKLoss. The survey (eq. 3) sums over the selected pixels; here the mean,
    as nnU-Net. ``k`` counts valid pixels, per batch: ``ceil(k/100 · n_valid)`` of them, so at least
    one when any pixel is valid (nnU-Net floors k % of all voxels, which can select none). Static
    shapes: a ``topk`` over all pixels with ignored ones ranked last, then a rank mask.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, k: float = 10.0) -> None:
        super().__init__(num_classes, ignore_index)
        if k <= 0:
            raise ValueError(f"loss 'topk': k={k} must be > 0 (a percentage of the valid pixels)")
        self.k = float(k)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        ce = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = self.valid(target).flatten()
        ce = torch.where(valid, ce.flatten(), -1.0)  # CE >= 0, so ignored pixels rank last
        most = math.ceil(ce.numel() * self.k / 100)
        top = ce.topk(most, sorted=True).values
        n = torch.ceil(valid.sum().double() * self.k / 100)  # float64: exact for any pixel count
        keep = torch.arange(most, device=ce.device) < n
        return (top * keep).sum() / n.clamp_min(1).float()


@register_loss(
    "ohem_ce",
    category="pixel",
    reference="Shrivastava, Gupta, Girshick. Online Hard Example Mining. CVPR 2016; pixel-wise form of "
    "HRNet (Wang et al. TPAMI 2020) and mmsegmentation's OHEMPixelSampler",
    survey=False,
    ranges={"thresh": (0, 1), "min_kept": (0, None)},
)
class OhemCrossEntropyLoss(SegLoss):
    """OHEM cross-entropy: mean CE over the valid pixels whose target probability is below ``thresh``,
    keeping at least the ``min_kept`` per image hardest ones.

    Defaults ``thresh=0.7``, ``min_kept=100000`` (per image, times the batch size, as mmsegmentation;
    HRNet's 100000 is per batch). Selection is done without gradient. The mean is over the kept
    pixels, as HRNet (mmsegmentation divides by all pixels). HRNet and mmsegmentation keep
    ``p < max(thresh, p_(min_kept+1))``; here ``p < thresh or p <= p_(min_kept)``, the same set
    without ties, except that with fewer than ``min_kept`` valid pixels all are kept where the
    originals drop the easiest one. Static shapes: a ``topk`` of size ``min_kept·B`` (skipped when
    that covers the batch).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, thresh: float = 0.7, min_kept: int = 100000
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if int(min_kept) != min_kept:
            raise ValueError(f"loss 'ohem_ce': min_kept={min_kept} must be a whole number of pixels")
        self.thresh, self.min_kept = float(thresh), int(min_kept)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = self.valid(target)
        logp_t = logits.float().log_softmax(1).gather(1, self.safe_target(target).unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            p = torch.where(valid, logp_t.exp(), 2.0).flatten()  # ignored pixels rank last
            keep = p < self.thresh
            kept = self.min_kept * target.shape[0]
            if kept >= p.numel():
                keep = torch.ones_like(keep)
            elif kept > 0:
                hardest = p.topk(kept, largest=False, sorted=True).values
                rank = (valid.sum().clamp_max(kept) - 1).clamp_min(0)
                keep = keep | (p <= hardest[rank])
            keep = keep.view_as(valid) & valid
        return -(logp_t * keep).sum() / keep.sum().clamp_min(1)
