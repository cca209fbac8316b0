"""Region-level losses (survey §2.2): Dice, Jaccard, Tversky, Focal Tversky, log-cosh Dice,
sensitivity–specificity and generalised Dice.

All score each class one-vs-rest on softmax probabilities (the originals are binary, foreground
only) through the options of ``OverlapLoss``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import SegLoss
from .registry import register_loss


def soft_sums(probs: Tensor, onehot: Tensor, batch: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per class: ``[C]`` if ``batch`` else ``[B,C]`` (inputs ``[B,C,H,W]``, both zero
    at ignored pixels). ``FP = Σ p - TP`` and ``FN = Σ t - TP``: one product instead of three."""
    dims = (0, 2, 3) if batch else (2, 3)
    tp = (probs * onehot).sum(dims)
    return tp, probs.sum(dims) - tp, onehot.sum(dims) - tp


def power(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for ``x >= 0`` that is 0 with a zero gradient at ``x = 0``.

    A plain power with an exponent below 1 has an infinite derivative at 0 (then NaN gradients, e.g.
    for a perfectly predicted class); the clamp keeps that branch finite.
    """
    return torch.where(x > 0, x.clamp_min(1e-30) ** exponent, torch.zeros_like(x))


class OverlapLoss(SegLoss):
    """Options shared by the per-class overlap losses.

    Each class is scored one-vs-rest on softmax probabilities, over the whole batch
    (``batch=True``) or per image (``False``), then averaged over classes (and images);
    ``include_background=False`` drops class 0. The smoothing ``s`` is added to numerator and
    denominator (MONAI's convention), which sets the empty-class rule of the ratio losses: a class
    absent from the target (in the batch, or the image) scores ``s / (s + its false-positive mass)``,
    1 when nothing is predicted and ≈0 otherwise, so false positives on absent classes are
    penalised. ``s > 0`` keeps empty classes and all-ignored batches finite.
    """

    def __init__(
        self, num_classes: int, ignore_index: int, smooth: float, batch: bool, include_background: bool
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not include_background and num_classes < 2:
            raise ValueError(
                f"{type(self).__name__}: include_background=False needs num_classes >= 2, got {num_classes}"
            )
        self.smooth, self.batch = float(smooth), bool(batch)
        self.first = 0 if include_background else 1

    @property
    def dims(self) -> tuple[int, ...]:
        """Axes summed per class: batch and space, or space only."""
        return (0, 2, 3) if self.batch else (2, 3)

    def inputs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Probabilities and one-hot target ``[B,C',H,W]`` (zero at ignored pixels, class 0 dropped
        unless ``include_background``)."""
        return self.probs(logits, target)[:, self.first :], self.one_hot(target)[:, self.first :]

    def sums(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Soft TP, FP, FN per class (and image unless ``batch``)."""
        return soft_sums(*self.inputs(logits, target), self.batch)


@register_loss(
    "dice",
    category="region",
    reference="Milletari, Navab, Ahmadi. V-Net. 3DV 2016",
    original="binary",
    ranges={"smooth": (0, None)},
)
class DiceLoss(OverlapLoss):
    """Soft Dice loss ``1 - mean_c (2 Σ p t + s) / (Σ p² + Σ t² + s)`` (V-Net).

    The original (Milletari et al.) squares the denominator terms; the survey (eq. 7) writes the
    linear Sørensen form ``Σ p + Σ t``. Default: the original (``squared=True``);
    ``squared=False`` gives the survey's form. Binary in the original; here one-vs-rest per class,
    averaged over classes, with the options and empty-class rule of ``OverlapLoss`` (absent class:
    ``s / (Σ p² + s)``; ``s=1e-5`` as MONAI).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        squared: bool = True,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth, batch, include_background)
        self.squared = bool(squared)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, t = self.inputs(logits, target)
        inter = (p * t).sum(self.dims)
        # t is one-hot, so Σ t² = Σ t
        denom = ((p * p) if self.squared else p).sum(self.dims) + t.sum(self.dims)
        return 1 - ((2 * inter + self.smooth) / (denom + self.smooth)).mean()


@register_loss(
    "jaccard",
    category="region",
    reference="Rahman, Wang. Optimizing Intersection-over-Union in Deep Neural Networks for Image "
    "Segmentation. ISVC 2016",
    original="binary",
    ranges={"smooth": (0, None)},
)
class JaccardLoss(OverlapLoss):
    """Soft Jaccard (IoU) loss ``1 - mean_c (Σ p t + s) / (Σ (p + t - p t) + s)`` (Rahman & Wang).

    Survey eq. 11. Binary in the original; here one-vs-rest per class with the options and
    empty-class rule of ``OverlapLoss``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth, batch, include_background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        tp, fp, fn = self.sums(logits, target)  # tp + fp + fn = Σ (p + t - p t)
        return 1 - ((tp + self.smooth) / (tp + fp + fn + self.smooth)).mean()


@register_loss(
    "tversky",
    category="region",
    reference="Salehi, Erdogmus, Gholipour. Tversky loss function for image segmentation using 3D "
    "fully convolutional deep networks. MLMI 2017",
    original="binary",
    ranges={"alpha": (0, None), "beta": (0, None), "smooth": (0, None)},
)
class TverskyLoss(OverlapLoss):
    """Tversky loss ``1 - mean_c (TP + s) / (TP + α FP + β FN + s)``; α=0.3, β=0.7 (Salehi et al.).

    As in the original (and MONAI), ``alpha`` weights false positives and ``beta`` false
    negatives, so β > α favours recall. The survey (eq. 13–14) swaps the roles (α on FN), so its
    ``(α, β)`` is this ``(beta, alpha)``. α=β=0.5 is the linear Dice loss, α=β=1 the Jaccard loss.
    Binary in the original; here one-vs-rest per class with the options and empty-class rule of
    ``OverlapLoss``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth, batch, include_background)
        if alpha + beta <= 0:
            raise ValueError(
                f"{type(self).__name__}: alpha={alpha} and beta={beta} are both 0, so nothing is penalised; "
                "set at least one of them > 0"
            )
        self.alpha, self.beta = float(alpha), float(beta)

    def index(self, logits: Tensor, target: Tensor) -> Tensor:
        """Tversky index per class (and image unless ``batch``)."""
        tp, fp, fn = self.sums(logits, target)
        return (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return 1 - self.index(logits, target).mean()


@register_loss(
    "focal_tversky",
    category="region",
    reference="Abraham, Khan. A Novel Focal Tversky Loss Function with Improved Attention U-Net for "
    "Lesion Segmentation. ISBI 2019",
    original="binary",
    ranges={"gamma": (1, 3), "alpha": (0, None), "beta": (0, None), "smooth": (0, None)},
)
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss ``mean_c (1 - TI_c)^(1/γ)``; γ=4/3, 0.3 on FP, 0.7 on FN (Abraham & Khan).

    The paper's definition with its recommended γ ∈ [1, 3]; its experiments and code use γ=4/3
    (exponent 0.75). The paper writes α for the FN weight (0.7) and β for the FP weight (0.3);
    here ``alpha``/``beta`` keep the meaning of ``tversky`` (FP/FN), so γ=1 equals ``tversky``
    with the same α, β. Binary in the original; here one-vs-rest per class. The paper sums over
    classes; here the mean (which keeps the scale independent of C and makes γ=1 equal
    ``tversky``). Options and empty-class rule of ``OverlapLoss``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        gamma: float = 4 / 3,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, alpha, beta, smooth, batch, include_background)
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return power(1 - self.index(logits, target), 1 / self.gamma).mean()


@register_loss(
    "log_cosh_dice",
    category="region",
    reference="Jadon. A survey of loss functions for semantic segmentation. IEEE CIBCB 2020",
    original="binary",
    ranges={"smooth": (0, None)},
)
class LogCoshDiceLoss(DiceLoss):
    """Log-cosh Dice loss ``log(cosh(L_dice))`` of the class-averaged Dice loss (Jadon).

    ``cosh(x) = (eˣ + e⁻ˣ)/2``; the survey (eq. 8) writes it with a minus, which is sinh.
    Jadon's (binary) Dice has the linear denominator ``Σ p + Σ t``, so ``squared=False`` is the
    default here; the Dice is ``dice``'s, one-vs-rest per class, with its other options. Jadon
    smooths with 1; here ``s=1e-5`` as for every overlap loss.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        squared: bool = False,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, squared, smooth, batch, include_background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return torch.cosh(super().forward(logits, target)).log()


@register_loss(
    "sensitivity_specificity",
    category="region",
    reference="Brosch et al. Deep Convolutional Encoder Networks for Multiple Sclerosis Lesion "
    "Segmentation. MICCAI 2015",
    original="binary",
    ranges={"r": (0, 1), "smooth": (0, None)},
)
class SensitivitySpecificityLoss(OverlapLoss):
    """Sensitivity–specificity loss ``r·Σ t(t-p)²/Σ t + (1-r)·Σ (1-t)(t-p)²/Σ (1-t)`` (Brosch et al.).

    Squared errors on the positives (sensitivity term, weight ``r``) and on the negatives
    (specificity term, weight ``1-r``), per class one-vs-rest, averaged over classes. ``r=0.05`` as
    NiftyNet, whose docstring says the authors suggest 0.01–0.10 (SegLossOdyssey uses 0.1); the
    Brosch paper itself was not consulted. The survey's eq. 18 (``1 - α·sens + (1-α)·spec``) is a
    garbled form of this. NiftyNet sums over classes; here the mean. ``s`` is added to both
    denominators only (NiftyNet's 1e-5), so a class absent from the target contributes only its
    specificity term (its false positives). Options of ``OverlapLoss``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        r: float = 0.05,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth, batch, include_background)
        self.r = float(r)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, t = self.inputs(logits, target)
        neg = self.valid(target).unsqueeze(1).float() - t  # 1 - t at valid pixels, 0 at ignored ones
        err = (t - p) ** 2  # 0 at ignored pixels
        sens = (err * t).sum(self.dims) / (t.sum(self.dims) + self.smooth)
        spec = (err * neg).sum(self.dims) / (neg.sum(self.dims) + self.smooth)
        return (self.r * sens + (1 - self.r) * spec).mean()


@register_loss(
    "generalized_dice",
    category="region",
    reference="Sudre, Li, Vercauteren, Ourselin, Cardoso. Generalised Dice overlap as a deep learning "
    "loss function for highly unbalanced segmentations. DLMIA 2017",
    survey=False,
    ranges={"smooth": (0, None)},
)
class GeneralizedDiceLoss(OverlapLoss):
    """Generalised Dice loss ``1 - (2 Σ_c w_c Σ p t + s) / (Σ_c w_c Σ (p + t) + s)``, ``w_c = 1/(Σ t)²``.

    Sudre et al.'s class weights, from the target counts of the batch (``batch=True``, as the
    authors' 2017 NiftyNet code, which scored the batch as one volume) or of each image
    (``batch=False``, as NiftyNet's later ``LossFunction``, which scores each image and averages).
    Absent classes would get infinite weights; as in MONAI they take the largest finite weight, so
    their false positives count like those of the rarest present class. The weights are normalised
    to sum to 1 (the ratio is scale-free), which keeps ``s`` a tiny constant: with raw weights
    ``1/(Σ t)²`` it would dominate both sums on large images.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        smooth: float = 1e-5,
        batch: bool = True,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index, smooth, batch, include_background)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, t = self.inputs(logits, target)
        count = t.sum(self.dims)
        present = count > 0
        w = torch.where(present, count.clamp_min(1) ** -2, torch.zeros_like(count))
        w = torch.where(present, w, w.amax(-1, keepdim=True))
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        inter = ((p * t).sum(self.dims) * w).sum(-1)
        denom = ((p.sum(self.dims) + count) * w).sum(-1)
        return 1 - ((2 * inter + self.smooth) / (denom + self.smooth)).mean()
