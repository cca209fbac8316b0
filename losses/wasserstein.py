"""Generalised Wasserstein Dice loss (Fidon et al. 2017): soft Dice with a class-distance matrix."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import SegLoss
from .registry import register_loss


def distance_matrix(value: Sequence[Sequence[float]] | None, num_classes: int) -> Tensor:
    """Validate a ``C×C`` class-distance matrix; ``None`` gives 0 on the diagonal and 1 elsewhere."""
    if value is None:
        return 1 - torch.eye(num_classes)
    where = "loss 'wasserstein_dice': dist_matrix"
    try:
        m = torch.tensor([[float(x) for x in row] for row in value], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a list of {num_classes} rows of {num_classes} numbers") from None
    if m.shape != (num_classes, num_classes):
        raise ValueError(
            f"{where} has shape {tuple(m.shape)}, expected ({num_classes}, {num_classes}) "
            f"(one row and one column per class, num_classes={num_classes})"
        )
    if not torch.isfinite(m).all() or (m < 0).any():
        raise ValueError(f"{where} must hold finite non-negative distances, got {m.tolist()}")
    if (m.diagonal() != 0).any():
        raise ValueError(f"{where} must have a zero diagonal (a class is at distance 0 from itself)")
    if not torch.equal(m, m.T):
        raise ValueError(f"{where} must be symmetric (dist_matrix[i][j] == dist_matrix[j][i])")
    return m.float()


@register_loss(
    "wasserstein_dice",
    category="region",
    reference=(
        "Fidon, Li, Garcia-Peraza-Herrera, Ekanayake, Kitchen, Ourselin, Vercauteren. Generalised "
        "Wasserstein Dice Score for Imbalanced Multi-class Segmentation using Holistic CNNs. BrainLes 2017"
    ),
    ranges={"smooth": (0, None)},
)
class WassersteinDiceLoss(SegLoss):
    """Generalised Wasserstein Dice loss ``1 - GWDS`` over a class-distance matrix ``M`` (Fidon et al.).

    Per valid pixel ``i`` with label ``g_i`` and softmax ``p_i``, the Wasserstein distance to the
    one-hot label is ``W_i = Σ_l M[l, g_i] p_i^l``. With class 0 as the background ``b``, the
    generalised true positives are ``TP = Σ_{i: g_i ≠ b} (M[g_i, b] - W_i)`` and
    ``GWDS = (2 TP + s) / (2 TP + Σ_i W_i + s)``. This is the original form; the survey's eq. 9
    (``-Σ M_{c,c} t y``) drops the ratio and the background-referenced TP term. ``M`` (``dist_matrix``,
    a C×C list of lists) must be non-negative, symmetric, with a zero diagonal; the default (1 off the
    diagonal) makes the loss a soft multi-class Dice. The score is invariant to scaling ``M``, so it is
    not normalised (MONAI divides by ``max M``, which only rescales ``s``). ``batch=False`` (the
    original) computes GWDS per image and averages over the images that have a valid pixel; ``True``
    pools the batch. Empty rule: an image without foreground scores ``s / (Σ W + s)``: 1 (loss 0) when
    nothing is wrong, ≈0 otherwise. Matches MONAI's ``GeneralizedWassersteinDiceLoss(weighting_mode=
    "default")``, whose TP uses ``1 - W_i``, i.e. assumes ``M[g, b] = max M``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        dist_matrix: Sequence[Sequence[float]] | None = None,
        smooth: float = 1e-5,
        batch: bool = False,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.register_buffer("dist_matrix", distance_matrix(dist_matrix, num_classes), persistent=False)
        self.smooth, self.batch = float(smooth), batch

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = self.valid(target).float()
        t = self.safe_target(target)
        p = logits.float().softmax(1)
        m = self.dist_matrix
        # cost[b,k,h,w] = Σ_l M[l,k] p^l: the distance to a one-hot label k; W_i picks k = g_i
        with torch.autocast(logits.device.type, enabled=False):
            cost = torch.einsum("lk,blhw->bkhw", m, p)
        w = cost.gather(1, t.unsqueeze(1)).squeeze(1) * valid
        foreground = (t != 0).float() * valid
        tp = foreground * (m[t, 0] - w)
        dims = (0, 1, 2) if self.batch else (1, 2)
        tp, err = tp.sum(dims), w.sum(dims)
        loss = 1 - (2 * tp + self.smooth) / (2 * tp + err + self.smooth)
        if self.batch:
            return loss
        has_valid = (valid.sum((1, 2)) > 0).float()
        return (loss * has_valid).sum() / has_valid.sum().clamp_min(1)
