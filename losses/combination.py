"""Combination losses (survey §2.4): Combo, Exponential Logarithmic, Unified Focal, and Dice + CE.

Each is a ``WeightedSum`` of term modules; the terms that are not losses of their own (a
one-vs-rest weighted BCE, the two exponential-logarithmic terms, the two asymmetric focal terms)
are the unregistered classes below.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import SegLoss, masked_mean
from .pixel import CrossEntropyLoss
from .region import DiceLoss, power, soft_sums
from .registry import register_loss


class WeightedSum(SegLoss):
    """``Σ_i w_i · L_i(logits, target)`` over named member losses (``{name: (w_i, L_i)}``)."""

    def __init__(self, num_classes: int, ignore_index: int, terms: dict[str, tuple[float, SegLoss]]) -> None:
        super().__init__(num_classes, ignore_index)
        self.weights = {name: float(w) for name, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({name: loss for name, (_, loss) in terms.items()})

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sum(self.weights[name] * loss(logits, target) for name, loss in self.terms.items())


class OneVsRestBCE(SegLoss):
    """β-weighted binary cross-entropy of each class against the rest on softmax probabilities:
    ``-[β t ln p + (1-β)(1-t) ln(1-p)]``, mean over valid pixels and the classes from ``first``
    (0, or 1 to leave the background out)."""

    def __init__(self, num_classes: int, ignore_index: int, beta: float, first: int = 0) -> None:
        super().__init__(num_classes, ignore_index)
        self.beta, self.first = float(beta), int(first)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = logits.float().log_softmax(1)
        logp_t = logp.gather(1, self.safe_target(target).unsqueeze(1))
        return self.from_probs(logp_t, logp.exp(), target)

    def from_probs(self, logp_t: Tensor, p: Tensor, target: Tensor) -> Tensor:
        """The loss from the target's log-probability ``[B,1,H,W]`` and the probabilities
        ``[B,C,H,W]`` (shared with ``combo``'s Dice term).

        ``ln(1 - p)`` is ``log1p(-p)``, accurate where ``p <= 1/2``; for the one class with ``p > 1/2``
        (if any), ``1 - p`` is the others' mass, summed directly so that it survives float32 when
        ``p → 1``. Only ``[B,H,W]`` maps are built besides one masked copy of ``p``.
        """
        first = self.first
        top = p > 0.5
        others = p.masked_fill(top, 0)  # the top class contributes log1p(0) = 0 below
        rest = others.sum(1, keepdim=True)  # 1 - p_top where a class has p > 1/2, else ≈ 1
        log_rest = rest.clamp_min(torch.finfo(p.dtype).tiny).log()
        top_scored = rest < 0.5
        if first:
            top_scored = top_scored & ~top[:, :first].any(1, keepdim=True)
        t = self.safe_target(target).unsqueeze(1)
        p_t = logp_t.exp()
        scored = t >= first  # the pixel's own class is one of the scored channels
        own_log1m = torch.where(p_t > 0.5, log_rest, torch.log1p(-p_t.clamp_max(0.5)))
        log1m = torch.log1p(others.neg_())  # in place: neither op needs its input for backward
        log1m_sum = log1m.sum(1, keepdim=True)
        if first:  # a sum over all channels minus the unscored ones: no slice of a full-size map
            log1m_sum = log1m_sum - log1m[:, :first].sum(1, keepdim=True)
        log1m_sum = log1m_sum + torch.where(top_scored, log_rest, 0.0)  # Σ_c ln(1 - p_c), scored c
        positive = torch.where(scored, logp_t, 0.0)  # Σ_c t ln p
        negative = log1m_sum - torch.where(scored, own_log1m, 0.0)  # Σ_c (1 - t) ln(1 - p)
        per_pixel = -(self.beta * positive + (1 - self.beta) * negative).squeeze(1)
        return masked_mean(per_pixel, self.valid(target)) / (self.num_classes - first)


@register_loss(
    "combo",
    category="combination",
    reference="Taghanaki et al. Combo loss: Handling input and output imbalance in multi-organ "
    "segmentation. CMIG 2019",
    original="binary",
    ranges={"alpha": (0, 1), "beta": (0, 1), "smooth": (0, None)},
)
class ComboLoss(SegLoss):
    """Combo loss ``α·(β-weighted BCE) + (1-α)·(1 - Dice)``; α=β=0.5, foreground only, s=1 (Taghanaki et al.).

    The original (paper eq. 3, authors' Keras ``combo_loss.py``) is binary: one sigmoid foreground map
    ``p``, ``L_BCE = -mean[β t ln p + (1-β)(1-t) ln(1-p)]`` over all pixels of the batch and
    ``Dice = (2 Σ p t + 1) / (Σ p + Σ t + 1)`` (smoothing 1, sums over the batch), combined as
    ``α·L_BCE - (1-α)·Dice``; β > 0.5 penalises false negatives more, α trades BCE against Dice.
    Multi-class here, one-vs-rest on softmax probabilities for the foreground classes ``c ≥ 1``
    (``include_background=False``, the default: with 2 classes exactly the authors' binary loss on
    channel 1): the BCE is averaged over valid pixels and scored classes, the Dice is the linear
    Sørensen Dice per class over the batch (``batch=False``: per image) with smoothing ``smooth``,
    averaged over scored classes. ``include_background=True`` also scores class 0 (with 2 classes
    this makes β inert: class 0's BCE is class 1's with β and 1-β swapped). Using ``1 - Dice``
    instead of ``-Dice`` adds the constant ``1-α`` (same gradients) so that the loss is ≥ 0.
    Differences from the Keras file: its successive versions mis-bracket the BCE (2019: β also
    multiplies the negative term; 2020: the negative term's sign is flipped), here the paper's
    formula; it clips ``p`` to ``[1e-7, 1-1e-7]``, here ``ln p`` and ``ln(1-p)`` are computed
    exactly instead. The survey's eq. 32 uses a class-weighted CE instead of the β-weighted BCE.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        alpha: float = 0.5,
        beta: float = 0.5,
        smooth: float = 1.0,
        batch: bool = True,
        include_background: bool = False,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not include_background and num_classes < 2:
            raise ValueError("loss 'combo': include_background=False needs num_classes >= 2")
        first = 0 if include_background else 1
        self.alpha, self.smooth, self.batch, self.first = float(alpha), float(smooth), bool(batch), first
        self.bce = OneVsRestBCE(num_classes, ignore_index, beta, first)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = logits.float().log_softmax(1)
        p = logp.exp()
        t = self.safe_target(target)
        logp_t = logp.gather(1, t.unsqueeze(1))
        bce = self.bce.from_probs(logp_t, p, target)
        # per-class sums without a one-hot: Σ p t and Σ t from the target's bins, Σ p as a product
        valid = self.valid(target)
        w = valid.to(p.dtype)
        b, c = p.shape[:2]
        bins = (torch.arange(b, device=t.device).view(b, 1, 1) * c + t).flatten()
        p_t = logp_t.exp()
        tp = p.new_zeros(b * c).index_add_(0, bins, (p_t.squeeze(1) * w).flatten())
        count = p.new_zeros(b * c).index_add_(0, bins, w.flatten())
        mass = (p.flatten(2) @ w.flatten(1).unsqueeze(-1)).squeeze(-1)  # Σ p over valid pixels
        tp, count = tp.view(b, c), count.view(b, c)
        if self.batch:
            tp, count, mass = tp.sum(0), count.sum(0), mass.sum(0)
        dice = (2 * tp + self.smooth) / (mass + count + self.smooth)
        return self.alpha * bce + (1 - self.alpha) * (1 - dice[..., self.first :].mean())


def _first_class(name: str, num_classes: int, include_background: bool) -> int:
    """The first class a region term scores: 0, or 1 without the background."""
    if not include_background and num_classes < 2:
        raise ValueError(f"loss {name!r}: include_background=False needs num_classes >= 2, got {num_classes}")
    return 0 if include_background else 1


class ExpLogDice(SegLoss):
    """``mean_c (-ln Dice_c)^γ`` with the linear soft Dice ``(2 Σ p t + s) / (Σ p + Σ t + s)``
    (classes from ``first`` on)."""

    def __init__(
        self, num_classes: int, ignore_index: int, gamma: float, smooth: float, batch: bool, first: int
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.gamma, self.smooth, self.batch, self.first = float(gamma), float(smooth), bool(batch), first

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, t = self.probs(logits, target)[:, self.first :], self.one_hot(target)[:, self.first :]
        tp, fp, fn = soft_sums(p, t, self.batch)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth)  # 2tp + fp + fn = Σ p + Σ t
        return power(-dice.log(), self.gamma).mean()


class ExpLogCross(SegLoss):
    """``E_x[w_l (-ln p_l)^γ]`` over valid pixels, ``w_l = (Σ_k f_k / f_l)^0.5`` from the batch's
    label counts ``f``."""

    def __init__(self, num_classes: int, ignore_index: int, gamma: float) -> None:
        super().__init__(num_classes, ignore_index)
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t, valid = self.safe_target(target), self.valid(target)
        logp_t = logits.float().log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
        counts = self.one_hot(target).sum((0, 2, 3))  # dense: a scatter into C bins is slow on CUDA
        w = (counts.sum() / counts.clamp_min(1)).sqrt()  # absent classes' weights are never used
        return masked_mean(w[t] * power(-logp_t, self.gamma), valid)


@register_loss(
    "exp_log",
    category="combination",
    reference="Wong, Moradi, Tang, Syeda-Mahmood. 3D Segmentation with Exponential Logarithmic Loss "
    "for Highly Unbalanced Object Sizes. MICCAI 2018",
    ranges={
        "w_dice": (0, None),
        "w_cross": (0, None),
        "gamma_dice": (0, None),
        "gamma_cross": (0, None),
        "smooth": (0, None),
    },
)
class ExpLogLoss(WeightedSum):
    """Exponential logarithmic loss ``w_dice·E_c[(-ln Dice_c)^γ] + w_cross·E_x[w_l (-ln p_l)^γ]``
    (Wong et al.); 0.8 / 0.2, γ=0.3.

    The original's defaults: ``w_dice=0.8``, ``w_cross=0.2``, ``γ_dice=γ_cross=0.3``, additive
    smoothing ``ε=1`` in the per-class Dice (kept here: with a tiny ε, ``-ln Dice`` of a class
    absent from the batch explodes), label weights ``w_l = (Σ_k f_k / f_l)^0.5``. The frequencies
    ``f`` are counted over the valid pixels of the batch (the runner knows no dataset statistics).
    Dice is per class over the batch (``batch=True``) or per image, averaged over the classes,
    background included unless ``include_background=False`` (the cross term always covers every
    valid pixel). The survey (eqs. 33–35) takes ``-log`` of the Dice *loss* and of the
    weighted CE; the original takes ``-ln`` of the Dice coefficient and of each pixel's
    probability, as here.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        w_dice: float = 0.8,
        w_cross: float = 0.2,
        gamma_dice: float = 0.3,
        gamma_cross: float = 0.3,
        smooth: float = 1.0,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        first = _first_class("exp_log", num_classes, include_background)
        super().__init__(
            num_classes,
            ignore_index,
            {
                "dice": (w_dice, ExpLogDice(num_classes, ignore_index, gamma_dice, smooth, batch, first)),
                "cross": (w_cross, ExpLogCross(num_classes, ignore_index, gamma_cross)),
            },
        )


class AsymmetricFocal(SegLoss):
    """Modified asymmetric focal term ``-(1-δ)(1-p_0)^γ ln p_0`` at background pixels (0 unless
    ``background``) and ``-δ ln p_c`` at pixels of the rare classes ``c ≥ 1``; mean over valid
    pixels."""

    def __init__(
        self, num_classes: int, ignore_index: int, delta: float, gamma: float, background: bool
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.delta, self.gamma, self.background = float(delta), float(gamma), bool(background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        t = self.safe_target(target)
        logp_t = logits.float().log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
        weight = (1 - self.delta) if self.background else 0.0
        background = weight * power(1 - logp_t.exp(), self.gamma) * -logp_t
        return masked_mean(torch.where(t == 0, background, self.delta * -logp_t), self.valid(target))


class AsymmetricFocalTversky(SegLoss):
    """Modified asymmetric focal Tversky term: ``1 - mTI_0`` for the background and
    ``(1 - mTI_c)^(1-γ)`` for the rare classes, ``mTI = (TP + s) / (TP + δ FN + (1-δ) FP + s)``;
    mean over the classes (the background's term only if ``background``) and images unless
    ``batch``."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        delta: float,
        gamma: float,
        smooth: float,
        batch: bool,
        background: bool,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.delta, self.gamma, self.smooth = float(delta), float(gamma), float(smooth)
        self.batch, self.background = bool(batch), bool(background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        tp, fp, fn = soft_sums(self.probs(logits, target), self.one_hot(target), self.batch)
        mti = (tp + self.smooth) / (tp + self.delta * fn + (1 - self.delta) * fp + self.smooth)
        rare = power(1 - mti[..., 1:], 1 - self.gamma)
        if not self.background:
            return rare.mean()
        return torch.cat([1 - mti[..., :1], rare], -1).mean()


@register_loss(
    "unified_focal",
    category="combination",
    reference="Yeung, Sala, Schönlieb, Rundo. Unified Focal loss: Generalising Dice and cross "
    "entropy-based losses to handle class imbalanced medical image segmentation. CMIG 2022",
    original="binary",
    ranges={"weight": (0, 1), "delta": (0, 1), "gamma": (0, 1), "smooth": (0, None)},
)
class UnifiedFocalLoss(WeightedSum):
    """Asymmetric Unified Focal loss ``λ·L_maF + (1-λ)·L_maFT``; λ=0.5, δ=0.6, γ=0.5 (Yeung et al.).

    The asymmetric variant with the authors' code defaults (``weight`` is λ). Class 0 is the
    background, suppressed: its focal term is modulated by ``(1-p)^γ`` and weighted ``1-δ``, its
    Tversky term is not enhanced. Every class ``c ≥ 1`` is a rare class, enhanced: plain CE weighted
    ``δ`` and Tversky term ``(1-mTI)^(1-γ)``. The authors' code is binary (one background and one
    foreground channel); this is its one-vs-rest extension to C classes. Reductions as the authors':
    the focal term is averaged over pixels, the Tversky term over classes and images
    (``batch=False``: mTI per image), smoothing ``smooth=1e-7`` (their ``K.epsilon()``) in mTI.
    ``include_background=False`` leaves out the suppressed background terms (the focal term at
    background pixels, which then count as 0 in its pixel mean, and the background's Tversky term),
    keeping only the enhanced rare-class terms. The paper writes λ on the focal term, the authors'
    code on the Tversky term (the same at 0.5); here the paper's. MONAI's port averages the focal term
    also over the two classes, i.e. halves it. Probabilities are not clipped to ``[ε, 1-ε]``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        weight: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        smooth: float = 1e-7,
        batch: bool = False,
        include_background: bool = True,
    ) -> None:
        if num_classes < 2:
            raise ValueError(
                f"loss 'unified_focal': num_classes={num_classes} must be >= 2 (class 0 is the background)"
            )
        bg = bool(include_background)
        super().__init__(
            num_classes,
            ignore_index,
            {
                "focal": (weight, AsymmetricFocal(num_classes, ignore_index, delta, gamma, bg)),
                "tversky": (
                    1 - weight,
                    AsymmetricFocalTversky(num_classes, ignore_index, delta, gamma, smooth, batch, bg),
                ),
            },
        )


@register_loss(
    "dice_ce",
    category="combination",
    reference="Chen et al. TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation. "
    "arXiv 2102.04306, 2021",
    survey=False,
    ranges={"lambda_ce": (0, None), "lambda_dice": (0, None), "smooth": (0, None)},
)
class DiceCELoss(WeightedSum):
    """TransUNet's ``0.5·CE + 0.5·Dice``: ``ce`` plus ``dice`` (squared denominators).

    ``smooth``, ``batch`` and ``include_background`` are the Dice term's; their defaults are
    TransUNet's Dice (and ``dice``'s): smoothing 1e-5, per class over the batch, mean over all
    classes including the background.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        lambda_ce: float = 0.5,
        lambda_dice: float = 0.5,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        dice = DiceLoss(
            num_classes, ignore_index, smooth=smooth, batch=batch, include_background=include_background
        )
        super().__init__(
            num_classes,
            ignore_index,
            {"ce": (lambda_ce, CrossEntropyLoss(num_classes, ignore_index)), "dice": (lambda_dice, dice)},
        )
