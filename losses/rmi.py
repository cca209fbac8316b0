"""Region Mutual Information loss (Zhao et al. 2019): pixel loss plus a bound on region-level MI."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SegLoss, masked_mean
from .registry import register_loss


def pool_masked(x: Tensor, mask: Tensor | None, size: int, kind: str) -> Tensor:
    """Down-sample ``x [B,C,H,W]`` by ``size`` (stride = size, padding size//2, as the official code)
    with the pixels outside ``mask [B,1,H,W]`` (if given) set to 0.

    As the official code, ``"avg"`` divides every cell's sum by ``size²``, also where the cell
    overlaps the zero padding or ignored pixels (``count_include_pad``); ``"max"`` of ``x >= 0``
    zeroed where ignored runs over the valid pixels."""
    pad = size // 2
    if mask is not None:
        x = x * mask
    if kind == "max":
        return F.max_pool2d(x, size, size, pad)
    return F.avg_pool2d(x, size, size, pad, count_include_pad=True)


def centred_vectors(x: Tensor, weight: Tensor, radius: int) -> Tensor:
    """The ``radius²``-D neighbourhood vectors of ``x [B,C,h,w]`` as ``[B,C,r²,L]``, centred on their
    mean over the valid points (``weight [B,1,1,L]``) and zeroed at the invalid ones."""
    b, c = x.shape[:2]
    v = F.unfold(x, radius).view(b, c, radius * radius, -1)
    mean = (v * weight).sum(-1, keepdim=True) / weight.sum(-1, keepdim=True).clamp_min(1)
    return (v - mean) * weight


class Gram64(torch.autograd.Function):
    """``a @ b^T`` over the last dim of ``[B,C,D,L]`` tensors, summed in float64, one class at a time.

    The official α = 5e-4 sits on un-normalised covariances (sums over thousands of points), below
    the resolution of float32 sums: float32 Gram matrices make ``Σ_{Y|P}`` indefinite (NaN) for good
    predictions. float32 products are exact in float64, so only the small ``[B,D,L]`` float64 copies of
    one class exist at a time. The backward runs in the inputs' dtype.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(a, b)
        grams = []
        for c in range(a.shape[1]):
            x = a[:, c].double()
            y = x if b is a else b[:, c].double()
            grams.append(x @ y.transpose(-1, -2))
        return torch.stack(grams, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b = ctx.saved_tensors
        grad = grad.to(a.dtype)
        with torch.autocast(grad.device.type, enabled=False):
            grad_a = grad @ b if ctx.needs_input_grad[0] else None
            grad_b = grad.transpose(-1, -2) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


@register_loss(
    "rmi",
    category="region",
    reference="Zhao, Wang, Yang, Cai. Region Mutual Information Loss for Semantic Segmentation. NeurIPS 2019",
    choices={"pool": ("max", "avg"), "activation": ("sigmoid", "softmax")},
    ranges={"radius": (1, 10), "pool_size": (1, None), "ce_weight": (0, 1)},
)
class RMILoss(SegLoss):
    """RMI: ``λ·BCE + (1-λ)·Σ_c ½ log det(Σ_{Y|P} + αI) / r²`` on down-sampled class maps (Zhao et al.).

    As the official code (ZJULearning/RMI, ``RMILoss`` defaults): labels and probabilities are
    max-pooled with size = stride = ``pool_size`` = 3 (its train script uses ``pool="avg"``, 4), each
    position and its ``radius×radius`` (3×3) neighbours give a 9-D point per class, and
    ``Σ_{Y|P} = Σ_Y - Σ_{YP} (Σ_P + αI)^{-1} Σ_{YP}^T`` is built from the un-normalised centred
    covariances with α = 5e-4. Its ½ log det (minus the MI lower bound, survey eq. 21) is divided by
    r², averaged over images and summed over classes, then mixed with the pixel loss by λ =
    ``ce_weight`` = 0.5. ``activation="sigmoid"`` (the original) uses per-class sigmoid probabilities
    and BCE summed over classes; ``"softmax"`` uses softmax probabilities and CE. Memory: the vectors
    are float32 (about one logits-sized tensor each for labels and probabilities), their Gram
    matrices are summed in float64 one class at a time, and the 9×9 algebra is float64 on
    ``[B,C,9,9]``. Deviations, none of which changes the gradient: ``r²·log α`` is subtracted so the
    RMI term is ``½ log det(I + Σ_{Y|P}/α) / r² ≥ 0`` (0 for absent classes and empty images, below
    ½ log 2 per class for a perfect prediction); the pixel loss is a mean over valid pixels (official:
    ``/(count + 1)``). Pooling as the official code: ignored pixels enter as 0 (label and
    probability), and ``pool="avg"`` divides each cell by ``pool_size²`` including the zero padding
    at the borders. Deviation, for ignored pixels only: the official code keeps every 9-D point,
    here a cell counts if one of its pixels is valid, a point if all its cells do (points over
    ignored regions are left out of the statistics), and an image without valid points is left out
    of the mean; the official ``+1e-6`` on the probabilities cancels in the centred covariances.
    """

    alpha = 5e-4  # official _POS_ALPHA: keeps the covariances positive definite

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        radius: int = 3,
        pool_size: int = 3,
        pool: Literal["max", "avg"] = "max",
        ce_weight: float = 0.5,
        activation: Literal["sigmoid", "softmax"] = "sigmoid",
    ) -> None:
        super().__init__(num_classes, ignore_index)
        for field, value in (("radius", radius), ("pool_size", pool_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"loss 'rmi': {field}={value!r} must be an integer")
        if pool not in ("max", "avg"):
            raise ValueError(f"loss 'rmi': pool={pool!r} must be 'max' or 'avg'")
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"loss 'rmi': activation={activation!r} must be 'sigmoid' or 'softmax'")
        self.radius, self.pool_size, self.pool = radius, pool_size, pool
        self.ce_weight, self.activation = float(ce_weight), activation

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        valid = self.valid(target)
        onehot = self.one_hot(target)
        x = logits.float()
        if self.activation == "sigmoid":
            # Σ_c BCE(x_c, t_c) = Σ_c softplus(x_c) - x_t for a one-hot t: no full-size target product
            x_t = x.gather(1, self.safe_target(target).unsqueeze(1)).squeeze(1)
            bce = F.softplus(x).sum(1) - x_t
            pixel, probs = masked_mean(bce, valid), x.sigmoid()
        else:
            ce = F.cross_entropy(x, self.safe_target(target), reduction="none")
            pixel, probs = masked_mean(ce, valid), x.softmax(1)
        return self.ce_weight * pixel + (1 - self.ce_weight) * self.rmi_term(onehot, probs, valid)

    def rmi_term(self, onehot: Tensor, probs: Tensor, valid: Tensor) -> Tensor:
        """``Σ_c mean_b ½ log det(I + Σ_{Y|P}/α) / r²`` for ``[B,C,H,W]`` labels and probabilities."""
        mask = valid.unsqueeze(1).float()
        labels = pool_masked(onehot, None, self.pool_size, self.pool)  # already 0 where ignored
        cell = F.max_pool2d(mask, self.pool_size, self.pool_size, self.pool_size // 2)
        probs = pool_masked(probs, mask, self.pool_size, self.pool)
        r, d = self.radius, self.radius * self.radius
        if min(labels.shape[-2:]) < r:
            raise ValueError(
                f"loss 'rmi': the input {tuple(onehot.shape[-2:])} pooled by pool_size={self.pool_size} is "
                f"smaller than radius={r}; use larger inputs or a smaller pool_size/radius"
            )
        point = -F.max_pool2d(-cell, r, 1)  # a point is valid when all its r×r cells are
        weight = point.flatten(2).unsqueeze(1)  # [B,1,1,L]
        with torch.autocast(probs.device.type, enabled=False):
            la = centred_vectors(labels, weight, r)
            pr = centred_vectors(probs, weight, r)
            la_cov, pr_cov, la_pr = Gram64.apply(la, la), Gram64.apply(pr, pr), Gram64.apply(la, pr)
        eye = torch.eye(d, dtype=torch.float64, device=probs.device)
        # cholesky_ex: no host sync (torch.linalg.cholesky checks for errors on the CPU)
        chol = torch.linalg.cholesky_ex(pr_cov + self.alpha * eye).L
        cond = la_cov - la_pr @ torch.cholesky_solve(la_pr.transpose(-1, -2), chol)
        cond = (cond + cond.transpose(-1, -2)) / 2
        diag = torch.linalg.cholesky_ex(cond / self.alpha + eye).L.diagonal(dim1=-2, dim2=-1)
        rmi = diag.log().sum(-1) / d  # ½ log det = Σ log diag(L); [B,C]
        has_points = (weight.sum((1, 2, 3)) > 0).float()
        per_class = (rmi * has_points[:, None]).sum(0) / has_points.sum().clamp_min(1)
        return per_class.sum().float()
