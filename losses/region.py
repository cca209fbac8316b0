"""Region-level losses (survey §2.2): Dice."""

from __future__ import annotations

from torch import Tensor

from .base import SegLoss
from .registry import register_loss


def soft_sums(probs: Tensor, onehot: Tensor, batch: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per class: ``[C]`` if ``batch`` else ``[B,C]`` (inputs ``[B,C,H,W]``)."""
    dims = (0, 2, 3) if batch else (2, 3)
    tp = (probs * onehot).sum(dims)
    fp = (probs * (1 - onehot)).sum(dims)
    fn = ((1 - probs) * onehot).sum(dims)
    return tp, fp, fn


@register_loss(
    "dice",
    category="region",
    reference="Milletari, Navab, Ahmadi. V-Net. 3DV 2016",
    original="binary",
    ranges={"smooth": (0, None)},
)
class DiceLoss(SegLoss):
    """Soft Dice loss ``1 - mean_c (2 Σ p t + s) / (Σ p² + Σ t² + s)`` (V-Net).

    The original (Milletari et al.) squares the denominator terms; the survey (eq. 7) writes the
    linear Sørensen form ``Σ p + Σ t``. Default: the original (``squared=True``);
    ``squared=False`` gives the survey's form. Binary in the original; here one-vs-rest per class
    with softmax probabilities, averaged over classes (``include_background=False`` drops class 0).
    ``batch=True`` sums over the whole batch per class; ``False`` computes Dice per image then
    averages. Empty-class rule: a class absent from the target (in the batch, or the image) scores
    ``s / (Σ p² + s)`` — 1 when nothing is predicted, ≈0 with false positives — so false positives
    on absent classes are penalised (MONAI's convention, ``s=1e-5`` on both terms).
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
        super().__init__(num_classes, ignore_index)
        if not include_background and num_classes < 2:
            raise ValueError("loss 'dice': include_background=False needs num_classes >= 2")
        self.squared, self.smooth, self.batch = squared, float(smooth), batch
        self.first = 0 if include_background else 1

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, t = self.probs(logits, target), self.one_hot(target)
        dims = (0, 2, 3) if self.batch else (2, 3)
        inter = (p * t).sum(dims)
        if self.squared:
            denom = (p * p).sum(dims) + (t * t).sum(dims)
        else:
            denom = p.sum(dims) + t.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return 1 - dice[..., self.first :].mean()
