"""Robust T-Loss (Gonzalez-Jimenez et al. 2023): Student-t likelihood of the residuals, learnable ν."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import SegLoss
from .registry import register_loss


@register_loss(
    "t_loss",
    category="region",
    reference=(
        "Gonzalez-Jimenez, Lionetti, Gottfrois, Gröger, Pouly, Navarini. Robust T-Loss for Medical "
        "Image Segmentation. MICCAI 2023"
    ),
    original="binary",
    ranges={"nu_init": (1e-6, None), "epsilon": (0, None)},
)
class TLoss(SegLoss):
    """Negative log-likelihood of a multivariate Student-t over the residuals ``p - t``, learnable ν.

    Per image and class, the residual ``δ = p_c - t_c`` (softmax vs one-hot) over the image's ``D``
    valid pixels is one D-dimensional sample of a Student-t with scale ``Σ = e^{-λ} I``::

        NLL = -lnΓ((ν+D)/2) + lnΓ(ν/2) + D/2·ln(πν) - D/2·λ + (ν+D)/2 · ln(1 + e^λ ||δ||² / ν)

    As ν → ∞ this tends to the Gaussian NLL, i.e. ``e^λ/2 · ||δ||²`` (MSE); small ν grows only
    logarithmically in ``||δ||²``, which bounds the pull of mislabelled pixels (the survey states the
    limits the other way round). ν = ``exp(θ) + ε`` with the parameter θ (``self.log_nu``) learnt with
    the model: the runner must add ``loss.parameters()`` to the optimiser. Defaults follow the authors'
    code (Digital-Dermatology/t-loss): θ₀ = 1, i.e. ``nu_init`` = e, ε = 1e-8, and the fixed
    log-precision λ = 1 (their ``lambdas``); λ = 0 gives Σ = I. Deviations: binary in the original
    (foreground probability vs mask), here one-vs-rest per class; the sum of the NLLs over images and
    classes is divided by ``C ×`` the number of valid pixels (the authors average the un-normalised
    per-image NLL over the batch), so the scale matches per-pixel losses under SGD (Adam is invariant
    to it). For ``C = 2`` the two classes have the same residual norm, so the value is the authors'
    divided by D. Ignored pixels leave ``δ`` and ``D``; an all-ignored batch gives 0.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        nu_init: float = math.e,
        log_precision: float = 1.0,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.log_nu = nn.Parameter(torch.tensor(math.log(nu_init)))
        self.log_precision, self.epsilon = float(log_precision), float(epsilon)

    @property
    def nu(self) -> Tensor:
        """The current degrees of freedom ν > 0."""
        return self.log_nu.exp() + self.epsilon

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        residual = self.probs(logits, target) - self.one_hot(target)
        sq = residual.square().sum((2, 3)).double()  # [B,C]
        d = self.valid(target).sum((1, 2)).double().unsqueeze(1)  # [B,1]
        nu, lam = self.nu.double(), self.log_precision
        nll = (
            torch.lgamma(nu / 2)
            - torch.lgamma((nu + d) / 2)
            + d / 2 * (math.log(math.pi) + nu.log() - lam)
            + (nu + d) / 2 * torch.log1p(math.exp(lam) * sq / nu)
        )
        return (nll.sum() / (self.num_classes * d.sum()).clamp_min(1)).float()
