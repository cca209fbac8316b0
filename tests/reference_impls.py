"""Transcriptions of the authors' public loss code, written for the reference tests.

Each function follows its original step by step (loops where the original loops, its reductions,
its constants) in float64 torch so that autograd gives the reference gradient. They are written
from reading the originals, not copied; the docstrings name the source and the conventions an
original needs from its caller (e.g. which pixels it can be given).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

IGNORE = 255


# --- combo: asgsaeid/ComboLoss combo_loss.py (Keras) and the paper's eq. 3 ------------------------


def combo_authors(probs_fg: torch.Tensor, target_fg: torch.Tensor, ce_w=0.5, ce_d_w=0.5, smooth=1.0):
    """``Combo_loss`` on one foreground map: everything flattened, Dice with smoothing 1, the
    β-weighted BCE as the paper writes it (the repository's versions mis-bracket it), ``mean``, and
    ``ce_d_w·BCE - (1-ce_d_w)·Dice``; the clip to ``[1e-7, 1-1e-7]`` is a no-op on these inputs."""
    y, p = target_fg.flatten(), probs_fg.flatten()
    d = (2 * (y * p).sum() + smooth) / (y.sum() + p.sum() + smooth)
    out = -(ce_w * y * p.log() + (1 - ce_w) * (1 - y) * (1 - p).log())
    return ce_d_w * out.mean() - (1 - ce_d_w) * d


# --- active boundary loss: wangchi95/active-boundary-loss abl.py ------------------------------------

#: the authors' neighbour order (row offset, column offset); index 8 is the pixel itself
ABL_OFFSETS = [(1, 0), (-1, 0), (0, -1), (0, 1), (-1, 1), (1, 1), (-1, -1), (1, -1), (0, 0)]


def abl_authors(logits: torch.Tensor, target: torch.Tensor, max_n_ratio=0.01, smoothing=0.2, clip=20.0):
    """``ABL.forward`` (the ABL term only; 0 where the original returns ``None``).

    gt2boundary (a label change to the lower or right neighbour, or an ignored pixel), the distance
    map of ``one_hot2dist`` written into an ``int32`` array (so truncated), ``logits2boundary`` with
    the 1.2× threshold loop over the whole batch and a 3×3 dilation, the 9-way argmin in the
    authors' order with 1e5 outside the image, KL to the detached, border-replicated neighbours,
    ``LabelSmoothSoftmaxCEV1`` (1-ε on the target, ε/8 on the others) and the clipped distance weight.
    """
    n, _, h, w = logits.shape
    t = target.numpy()
    bound = np.zeros((n, h, w), bool)
    bound[:, :-1] |= t[:, 1:] != t[:, :-1]
    bound[:, :, :-1] |= t[:, :, 1:] != t[:, :, :-1]
    bound |= t == IGNORE
    dist = np.zeros((n, h, w), np.int32)
    for i in range(n):
        pos = ~bound[i]  # class2one_hot(boundary, C=1) is "boundary == 0"
        if pos.any():
            neg = ~pos
            outside = ndimage.distance_transform_edt(neg) * neg
            dist[i] = outside - (ndimage.distance_transform_edt(pos) - 1) * pos  # int32: truncated
    dist = np.maximum(-dist, 0).astype(np.float64)

    p, logp = logits.softmax(1), logits.log_softmax(1)
    kl_ud = (p[:, :, :-1] * (logp[:, :, :-1] - logp[:, :, 1:])).sum(1)
    kl_lr = (p[..., :-1] * (logp[..., :-1] - logp[..., 1:])).sum(1)
    kl = (F.pad(kl_ud, (0, 0, 0, 1)) + F.pad(kl_lr, (0, 1))).detach().float()
    eps, max_n = 1e-5, h * w * max_n_ratio
    while (kl > eps).sum() > max_n:
        eps *= 1.2
    pred = F.conv2d((kl > eps).float()[:, None], torch.ones(1, 1, 3, 3), padding=1)[:, 0] > 0
    if pred.sum() < 1:
        return logits.sum() * 0

    terms, weights = [], []
    for b, y, x in pred.nonzero().tolist():
        inside = [0 <= y + dy < h and 0 <= x + dx < w for dy, dx in ABL_OFFSETS]
        around = [
            dist[b, y + dy, x + dx] if i else 1e5 for (dy, dx), i in zip(ABL_OFFSETS, inside, strict=True)
        ]
        direction = int(np.argmin(around))  # the first of equal minima
        if direction == 8:
            continue
        z = []
        for dy, dx in ABL_OFFSETS[:8]:
            ny, nx = min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)
            q, logq = p[b, :, ny, nx].detach(), logp[b, :, ny, nx].detach()
            z.append((q * (logq - logp[b, :, y, x])).sum())
        log_sm = torch.stack(z).log_softmax(0)
        label = torch.full((8,), smoothing / 8, dtype=torch.float64)
        label[direction] = 1 - smoothing
        terms.append(-(log_sm * label).sum())
        weights.append(min(dist[b, y, x], clip) / clip)
    if not terms:
        return logits.sum() * 0
    return (torch.stack(terms) * torch.tensor(weights)).mean()


def masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy`` averaged over the non-ignored pixels (0 when there are none)."""
    if (target != IGNORE).any():
        return F.cross_entropy(logits, target, ignore_index=IGNORE)
    return logits.sum() * 0
