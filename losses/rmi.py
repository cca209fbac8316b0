"""Region Mutual Information loss (Zhao et al. 2019): pixel loss plus a bound on region-level MI."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SegLoss, masked_mean
from .registry import register_loss


def pool_masked(x: Tensor, mask: Tensor, size: int, kind: str) -> Tensor:
    """Down-sample ``x [B,C,H,W]`` by ``size`` (stride = size, padding size//2, as the official code)
    with the pixels outside ``mask [B,1,H,W]`` set to 0.

    As the official code, ``"avg"`` divides every cell's sum by ``size²``, also where the cell
    overlaps the zero padding or ignored pixels (``count_include_pad``); ``"max"`` of ``x >= 0``
    zeroed where ignored runs over the valid pixels."""
    pad = size // 2
    x = x * mask
    if kind == "max":
        return F.max_pool2d(x, size, size, pad)
    return F.avg_pool2d(x, size, size, pad, count_include_pad=True)


def pool_labels(target: Tensor, valid: Tensor, num_classes: int, size: int, kind: str) -> Tensor:
    """:func:`pool_masked` of the one-hot ``target [B,H,W]`` (ignored pixels all-zero) as
    ``[B,C,h,w]``, without the full-size one-hot: each valid pixel adds to its cell's class, which is
    ``(y + size//2) // size`` by ``(x + size//2) // size``; ``"max"`` keeps 1 where a class occurs,
    ``"avg"`` counts and divides by ``size²`` (as ``count_include_pad``). Pixels past the last
    whole cell are dropped, as the pools drop them."""
    b, h, w = target.shape
    pad = size // 2
    oh, ow = (h + 2 * pad - size) // size + 1, (w + 2 * pad - size) // size + 1
    rows = (torch.arange(h, device=target.device) + pad) // size
    cols = (torch.arange(w, device=target.device) + pad) // size
    inside = (rows < oh)[:, None] & (cols < ow)[None, :] & valid
    cell = (rows[:, None] * ow + cols[None, :]).expand(b, h, w)
    index = torch.where(inside, target * (oh * ow) + cell, num_classes * oh * ow)  # spare bin: dropped
    counts = torch.zeros(b, num_classes * oh * ow + 1, device=target.device)
    counts.scatter_add_(1, index.flatten(1), torch.ones_like(index, dtype=counts.dtype).flatten(1))
    counts = counts[:, :-1].view(b, num_classes, oh, ow)
    return (counts > 0).float() if kind == "max" else counts / (size * size)


def neighbourhood_vectors(x: Tensor, weight: Tensor, radius: int) -> Tensor:
    """The ``radius²``-D neighbourhood vectors of ``x [B,C,h,w]`` as ``[B,C,r²,L]``, zeroed at the
    invalid points (``weight [B,1,1,L]``)."""
    b, c = x.shape[:2]
    return F.unfold(x, radius).view(b, c, radius * radius, -1) * weight


class CentredGram64(torch.autograd.Function):
    """Centred Gram matrices of the stacked vectors ``u = [a; b]`` (``a [B,C,Da,L]``, ``b [B,C,Db,L]``)
    over the ``n [B]`` valid points: ``Σ_l (u_l - m)(u_l - m)^T`` with ``m = Σ_l u_l / n`` (``u`` is zero
    at the other points), ``[B,C,Da+Db,Da+Db]``, summed in float64 one class at a time.

    The official α = 5e-4 sits on un-normalised covariances (sums over thousands of points), below
    the resolution of float32 sums: float32 Gram matrices make ``Σ_{Y|P}`` indefinite (NaN) for good
    predictions. float32 values are exact in float64, so the raw moments ``u u^T - s s^T / n``
    (``s = Σ_l u_l``) lose nothing there, and only the small ``[B,D,L]`` float64 copy of one class
    exists at a time. One Gram of the label (``a``) and probability (``b``) vectors holds all three
    covariances (``Σ_Y``, ``Σ_{YP}``, ``Σ_P``). The backward, ``H (u - m 1^T)`` with ``H = G' + G'^T``,
    runs in the inputs' dtype for the rows of each input that needs a gradient; it is not zeroed at
    the invalid points (the caller's mask does that).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, n: Tensor) -> Tensor:
        n = n.double().clamp_min(1).view(-1, 1, 1)
        grams, means = [], []
        for c in range(a.shape[1]):
            x = torch.cat([a[:, c], b[:, c]], 1).double()  # [B,D,L]
            s = x.sum(-1, keepdim=True)
            grams.append(x @ x.transpose(-1, -2) - s @ s.transpose(-1, -2) / n)
            means.append(s / n)
        ctx.save_for_backward(a, b, torch.stack(means, 1).to(b.dtype))  # means [B,C,D,1]
        return torch.stack(grams, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b, mean = ctx.saved_tensors
        da = a.shape[2]
        grad = grad.to(b.dtype)
        with torch.autocast(grad.device.type, enabled=False):
            h = grad + grad.transpose(-1, -2)
            out = []
            for rows, needed in (
                (h[..., :da, :], ctx.needs_input_grad[0]),
                (h[..., da:, :], ctx.needs_input_grad[1]),
            ):
                out.append(rows[..., :da] @ a + rows[..., da:] @ b - rows @ mean if needed else None)
        return out[0], out[1], None


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
        x = logits.float()
        if self.activation == "sigmoid":
            # Σ_c BCE(x_c, t_c) = Σ_c softplus(x_c) - x_t for a one-hot t: no full-size target product
            x_t = x.gather(1, self.safe_target(target).unsqueeze(1)).squeeze(1)
            bce = F.softplus(x).sum(1) - x_t
            pixel, probs = masked_mean(bce, valid), x.sigmoid()
        else:
            ce = F.cross_entropy(x, self.safe_target(target), reduction="none")
            pixel, probs = masked_mean(ce, valid), x.softmax(1)
        return self.ce_weight * pixel + (1 - self.ce_weight) * self.rmi_term(target, probs, valid)

    def rmi_term(self, target: Tensor, probs: Tensor, valid: Tensor) -> Tensor:
        """``Σ_c mean_b ½ log det(I + Σ_{Y|P}/α) / r²`` of ``[B,H,W]`` labels, ``[B,C,H,W]`` probs."""
        mask = valid.unsqueeze(1).float()
        labels = pool_labels(target, valid, self.num_classes, self.pool_size, self.pool)
        cell = F.max_pool2d(mask, self.pool_size, self.pool_size, self.pool_size // 2)
        probs = pool_masked(probs, mask, self.pool_size, self.pool)
        r, d = self.radius, self.radius * self.radius
        if min(labels.shape[-2:]) < r:
            raise ValueError(
                f"loss 'rmi': the input {tuple(target.shape[-2:])} pooled by pool_size={self.pool_size} is "
                f"smaller than radius={r}; use larger inputs or a smaller pool_size/radius"
            )
        point = -F.max_pool2d(-cell, r, 1)  # a point is valid when all its r×r cells are
        weight = point.flatten(2).unsqueeze(1)  # [B,1,1,L]
        with torch.autocast(probs.device.type, enabled=False):
            la, pr = neighbourhood_vectors(labels, weight, r), neighbourhood_vectors(probs.float(), weight, r)
            gram = CentredGram64.apply(la, pr, weight.sum((1, 2, 3)))  # [B,C,2d,2d]
        la_cov, la_pr, pr_cov = gram[..., :d, :d], gram[..., :d, d:], gram[..., d:, d:]
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
