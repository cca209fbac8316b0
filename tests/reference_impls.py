"""Transcriptions of the authors' public loss code, written for the reference tests.

Each function follows its original step by step (loops where the original loops, its reductions,
its constants) in float64 torch so that autograd gives the reference gradient. They are written
from reading the originals, not copied; the docstrings name the source and the conventions an
original needs from its caller (e.g. which pixels it can be given).
"""

from __future__ import annotations

import math

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


# --- conditional boundary loss: dywu98/CBL-Conditional-Boundary-Loss (biou.py, CBLocr_head.py) -------


def cbl_authors_boundary(target: torch.Tensor, dilation_ratio: float = 0.02) -> torch.Tensor:
    """``multi_class_gt_to_boundary`` per image (``GenerateBoundary``): for each class present, the
    mask minus its erosion (the mask padded by one zero pixel, 3×3, ``dilation`` iterations; cv2's
    default border does not erode), united; ignored pixels are no boundary. Bool ``[B,H,W]``."""
    out = torch.zeros(target.shape, dtype=torch.bool)
    for i, t in enumerate(target.numpy()):
        h, w = t.shape
        dilation = max(round(dilation_ratio * math.hypot(h, w)), 1)  # int(round(·)) in the original
        for c in np.unique(t):
            if c == IGNORE:
                continue
            mask = np.pad(t == c, 1)
            eroded = ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=dilation, border_value=1)
            out[i] |= torch.from_numpy((mask & ~eroded)[1:-1, 1:-1])
    return out


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """``NeighborExtractor5``: the sum over the 5×5 window without its centre, zero padding."""
    kernel = torch.ones(5, 5, dtype=x.dtype)
    kernel[2, 2] = 0
    c = x.shape[1]
    return F.conv2d(x, kernel.expand(c, 1, 5, 5), padding=2, groups=c)


def cbl_authors(features, head, target, num_classes, dilation_ratio=0.02):
    """``CBLOCRHead.losses`` with the features at the label resolution: ``loss_seg`` (CE of the
    logits ``head(features)``, a bias-free 1×1 convolution ``[C,D]``) + ``loss_context`` +
    0.2·``loss_NCE`` + 2·``loss_CN``, each written as ``context_loss`` / ``er_loss`` compute it."""
    f, t = features, target
    b, _, h, w = f.shape
    logits = torch.einsum("cd,bdhw->bchw", head, f)
    gt_b = cbl_authors_boundary(t, dilation_ratio)
    onehot = F.one_hot(torch.where(t == IGNORE, num_classes, t), num_classes + 1)[..., :num_classes].double()

    # context_loss: boundary pixels times their label (class 0 drops out), away from the border
    cal = gt_b & (t != IGNORE) & (t > 0)
    context, images = f.sum() * 0, b
    for i in range(b):
        ys, xs = cal[i].nonzero(as_tuple=True)
        if len(ys) == 0:
            images -= 1
            continue
        inside = (ys >= 2) & (ys <= h - 3) & (xs >= 2) & (xs <= w - 3)
        ys, xs = ys[inside], xs[inside]
        term = f.sum() * 0
        shifts = [(ki - 2, kj - 2) for ki in range(5) for kj in range(5) if ki != 2 or kj != 2]
        for dy, dx in shifts:
            sim = F.cosine_similarity(f[i][:, ys, xs], f[i][:, ys + dy, xs + dx], dim=0)
            label = (onehot[i, ys, xs] * onehot[i, ys + dy, xs + dx]).sum(-1)
            term = term + F.mse_loss(sim, label)
        context = context + term / len(shifts)
    context = context / images

    # er_loss: per class present, the boundary pixels with same-class (correct) neighbours
    pred = logits.argmax(1)
    nce, cn, counted = f.sum() * 0, f.sum() * 0, 0
    for c in [c for c in t.unique().tolist() if c != IGNORE]:
        cm, pm = (t == c).double()[:, None], (pred == c).double()[:, None]
        cnt, cnt_corr = _neighbour_sum(cm), _neighbour_sum(cm * pm)
        mean_all = _neighbour_sum(f * cm) / (cnt + 1e-5)
        mean_corr = _neighbour_sum(f * cm * pm) / (cnt_corr + 1e-5)
        sel = ((cnt >= 1) & gt_b[:, None] & (cm > 0))[:, 0]
        sel_corr = ((cnt_corr >= 1) & gt_b[:, None] & (cm > 0) & (pm > 0))[:, 0]
        if sel.sum() < 1 or sel_corr.sum() < 1:
            continue
        counted += 1
        centres_all = mean_all.permute(0, 2, 3, 1)[sel]  # [N, D]
        centres_corr = mean_corr.permute(0, 2, 3, 1)[sel_corr]
        label_all = torch.full((len(centres_all),), c)
        label_corr = torch.full((len(centres_corr),), c)
        nce = nce + F.cross_entropy(centres_all @ head.T, label_all)
        nce = nce + F.cross_entropy(centres_corr @ head.T, label_corr)
        cn = cn + F.mse_loss(f.permute(0, 2, 3, 1)[sel_corr], centres_corr.detach())
    if counted:
        nce, cn = nce / counted, cn / counted
    return masked_ce(logits, t) + context + 0.2 * nce + 2 * cn


# --- RMI: ZJULearning/RMI losses/rmi/rmi.py (forward_sigmoid, rmi_lower_bound) -----------------------


def rmi_authors(logits, target, num_classes, radius=3, pool_way="max", pool=3, weight_lambda=0.5):
    """``RMILoss.forward_sigmoid``: BCE summed over valid pixels / (count + 1), probabilities
    ``sigmoid · mask + 1e-6``, max/avg pooling (size = stride, padding size//2, avg dividing by
    size²), the r×r neighbour vectors of ``map_get_pairs``, centred covariances in float64,
    ``Σ_Y − Σ_YP (Σ_P + αI)^{-1} Σ_YPᵀ``, ``½·log det`` by Cholesky (with its +1e-8 on the
    diagonal), mean over images, / r², summed over classes; ``λ·BCE + (1 − λ)·RMI``."""
    alpha = 5e-4
    mask = (target < num_classes).double()
    onehot = F.one_hot(torch.where(target < num_classes, target, 0), num_classes).double() * mask[..., None]
    bce = F.binary_cross_entropy_with_logits(
        logits.permute(0, 2, 3, 1), onehot, weight=mask[..., None], reduction="sum"
    ) / (mask.sum() + 1.0)
    probs = logits.sigmoid() * mask[:, None] + 1e-6
    labels = onehot.permute(0, 3, 1, 2)
    if pool_way == "max":
        labels, probs = (F.max_pool2d(x, pool, pool, pool // 2) for x in (labels, probs))
    else:
        labels, probs = (F.avg_pool2d(x, pool, pool, pool // 2) for x in (labels, probs))
    n, c, h, w = labels.shape
    nh, nw = h - (radius - 1), w - (radius - 1)
    la = torch.stack([labels[:, :, y : y + nh, x : x + nw] for y in range(radius) for x in range(radius)], 2)
    pr = torch.stack([probs[:, :, y : y + nh, x : x + nw] for y in range(radius) for x in range(radius)], 2)
    d = radius * radius
    la, pr = la.reshape(n, c, d, -1), pr.reshape(n, c, d, -1)
    eye = torch.eye(d, dtype=torch.float64)
    la, pr = la - la.mean(3, keepdim=True), pr - pr.mean(3, keepdim=True)
    la_cov, pr_cov, la_pr = la @ la.transpose(2, 3), pr @ pr.transpose(2, 3), la @ pr.transpose(2, 3)
    appro_var = la_cov - la_pr @ torch.inverse(pr_cov + eye * alpha) @ la_pr.transpose(-2, -1)
    chol = torch.linalg.cholesky(appro_var + eye * alpha)
    rmi = 0.5 * 2.0 * (chol.diagonal(dim1=-2, dim2=-1) + 1e-8).log().sum(-1)
    rmi = (rmi.view(-1, num_classes).mean(0) / d).sum()
    return weight_lambda * bce + (1 - weight_lambda) * rmi


# --- clDice: jocpae/clDice cldice_loss/pytorch (2024: soft_skeleton.py, cldice.py) -------------------


def soft_skeleton_authors(img: torch.Tensor, num_iter: int = 10) -> torch.Tensor:
    """``SoftSkeletonize.soft_skel``: erosion as the minimum of a (3,1) and a (1,3) min-pool,
    dilation a 3×3 max-pool, ``num_iter`` further rounds, union ``skel + relu(delta - skel·delta)``."""

    def erode(x):
        return torch.min(-F.max_pool2d(-x, (3, 1), (1, 1), (1, 0)), -F.max_pool2d(-x, (1, 3), (1, 1), (0, 1)))

    def open_(x):
        return F.max_pool2d(erode(x), (3, 3), (1, 1), (1, 1))

    skel = F.relu(img - open_(img))
    for _ in range(num_iter):
        img = erode(img)
        delta = F.relu(img - open_(img))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def cldice_authors(y_true, y_pred, alpha=0.5, smooth=1.0, num_iter=10, exclude_background=False):
    """``soft_dice_cldice.forward``: sums over everything (batch and channels together)."""
    if exclude_background:
        y_true, y_pred = y_true[:, 1:], y_pred[:, 1:]
    dice = 1 - (2 * (y_true * y_pred).sum() + 1) / (y_true.sum() + y_pred.sum() + 1)  # smooth 1
    skel_pred, skel_true = soft_skeleton_authors(y_pred, num_iter), soft_skeleton_authors(y_true, num_iter)
    tprec = ((skel_pred * y_true).sum() + smooth) / (skel_pred.sum() + smooth)
    tsens = ((skel_true * y_pred).sum() + smooth) / (skel_true.sum() + smooth)
    return (1 - alpha) * dice + alpha * (1 - 2 * tprec * tsens / (tprec + tsens))
