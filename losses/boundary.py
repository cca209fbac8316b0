"""Boundary-level losses (survey §2.3) and the distance-map-weighted cross-entropy (§2.1.4).

Distance maps come from :mod:`losses.distance` (exact EDT, computed from the target of the current —
possibly augmented and cropped — batch; maps are in pixels). A loss declares the maps of the target
it needs (``maps=`` in its registration); the runner has them made in the loader workers and passes
them as keyword arguments; called without them, a loss computes them itself, with the same values.
Ignored pixels belong to no class, so for the maps they are background of every class; they never
enter a loss value or gradient. Binary-in-the-original losses are applied one-vs-rest to every class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SegLoss, masked_mean
from .distance import GT_MAPS, edt_batch, unsigned_distance_maps
from .pixel import CrossEntropyLoss
from .region import DiceLoss, GeneralizedDiceLoss
from .registry import register_loss


def _given(value: Tensor | None, name: str, target: Tensor, num_classes: int) -> Tensor:
    """The target map ``name`` as passed in (made in the loader workers), else computed here."""
    if value is None:
        return GT_MAPS[name](target, num_classes)
    value = value.to(target.device)
    if value.shape[0] != target.shape[0] or value.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"map {name!r} has shape {list(value.shape)}, target {list(target.shape)}")
    return value


def _class_max(values: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per image and class, the largest of ``values`` ``[B,H,W]`` over that class's pixels:
    ``[B,C+1]`` (column C collects the pixels of no class; 0 where a class is absent)."""
    idx = torch.where((target >= 0) & (target < num_classes), target, num_classes).flatten(1)
    out = values.new_zeros(values.shape[0], num_classes + 1)
    return out.scatter_reduce(1, idx, values.flatten(1), "amax")


@register_loss(
    "dmce",
    category="pixel",
    reference="Calivá, Iriondo, Martinez, Majumdar, Pedoia. Distance Map Loss Penalty Term for "
    "Semantic Segmentation. MIDL 2019",
    needs_distance_maps=True,
    maps=("label_distance",),
    ranges={"decay": (0, None)},
)
class DistanceMapCELoss(SegLoss):
    """Distance-map-derived cross-entropy ``mean((1 + Φ) · CE)``, Φ ∈ [0, 1] peaking at GT boundaries.

    Φ is the inverted, normalised distance-to-boundary map (survey eq. 5: "the inverse of a distance
    map"): with d the distance of a pixel to the nearest pixel of another label (1 on a region's
    rim) and d_max the largest d of that class in that image, ``Φ = (1 − (d − 1) / max(d_max − 1,
    1))^decay`` — 1 on the rim, falling to 0 at the class's deepest pixel; ``decay`` (the "decay
    rate" of the survey's Table 2) sharpens the fall-off. Calivá et al. published no code; the
    SegLossOdyssey port (``compute_edts_forPenalizedLoss``) normalises per image as ``1 − d/d_max``
    (the rim gets ``(d_max − 1)/d_max``: 0 on a structure one or two pixels thin) and its
    ``DisPenalizedCE`` returns the unweighted CE mean (the weighted loss is computed but not
    returned); here the rim gets the full weight. Multi-class: each pixel uses its own GT class's
    region; a class filling the whole image measures to the image border. Mean over valid pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, decay: float = 1.0) -> None:
        super().__init__(num_classes, ignore_index)
        self.decay = float(decay)

    def forward(self, logits: Tensor, target: Tensor, label_distance: Tensor | None = None) -> Tensor:
        valid = self.valid(target)
        with torch.no_grad():
            d = _given(label_distance, "label_distance", target, self.num_classes) - 1
            dmax = _class_max(d, target, self.num_classes)
            idx = torch.where(valid, target, self.num_classes).flatten(1)
            norm = dmax.gather(1, idx).view_as(d).clamp_min(1)
            phi = (1 - d / norm).clamp(0, 1) ** self.decay
        ce = F.cross_entropy(logits.float(), self.safe_target(target), reduction="none")
        return masked_mean((1 + phi) * ce, valid)


@register_loss(
    "boundary",
    category="boundary",
    reference="Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed. Boundary loss for highly "
    "unbalanced segmentation. MIDL 2019 (MedIA 2021)",
    original="binary",
    needs_distance_maps=True,
    inputs=("progress",),
    maps=("signed_distance",),
    ranges={"alpha": (0, None), "rate": (0, None), "region_floor": (0, 1)},
    choices={"region": ("gdl", "dice")},
)
class BoundaryLoss(SegLoss):
    """Boundary (surface) loss ``mean(softmax · φ_G)`` plus a regional loss, rebalanced over training.

    φ_G are Kervadec's signed maps (positive outside, ≤ 0 inside, absent class 0); the boundary term
    is the mean over valid pixels and all classes (one-vs-rest; the original is binary), so it is
    negative for good predictions. The total is ``w_R · L_region + w_B · L_B`` with the schedule of
    the authors' code (``StealWeight(0.01)`` over 100 epochs: from weights (1, 0.01), each epoch
    moves 0.01 from the region to the boundary term, the region weight floored at 0.1), written in
    training ``progress`` p ∈ [0, 1]: ``w_R = max(region_floor, 1 − rate·p)``, ``w_B = alpha +
    rate·p``; ``rate=0`` keeps the weights constant at (1, alpha), and ``alpha=0,
    region_floor=0.01`` is the MIDL paper's ``α·L_R + (1 − α)·L_B`` with α falling to 0.01.
    ``region="gdl"`` is the original's Generalised Dice per image (the package's
    ``generalized_dice`` with ``batch=False``: absent classes take the image's largest class
    weight, where Kervadec's 1e-10 smoothing gives them 1e20, flattening the loss to ≈ 1);
    ``"dice"`` is the package's ``dice`` loss. Maps are in pixels, so the boundary term grows with
    the image size; ``normalize=True`` divides them by the image diagonal.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        region: str = "gdl",
        alpha: float = 0.01,
        rate: float = 1.0,
        region_floor: float = 0.1,
        normalize: bool = False,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if region not in ("gdl", "dice"):
            raise ValueError(f"loss 'boundary': region={region!r} must be 'gdl' or 'dice'")
        if region == "gdl":
            self.region = GeneralizedDiceLoss(num_classes, ignore_index, batch=False)
        else:
            self.region = DiceLoss(num_classes, ignore_index)
        self.alpha, self.rate, self.region_floor = float(alpha), float(rate), float(region_floor)
        self.normalize = normalize

    def weights(self, progress: float) -> tuple[float, float]:
        """``(w_region, w_boundary)`` at training ``progress`` ∈ [0, 1]."""
        if not 0 <= progress <= 1:
            raise ValueError(f"loss 'boundary': progress={progress!r} must be in [0, 1]")
        return max(self.region_floor, 1 - self.rate * progress), self.alpha + self.rate * progress

    def forward(
        self, logits: Tensor, target: Tensor, progress: float, signed_distance: Tensor | None = None
    ) -> Tensor:
        w_region, w_boundary = self.weights(float(progress))
        valid, p = self.valid(target), self.probs(logits, target)
        with torch.no_grad():
            phi = _given(signed_distance, "signed_distance", target, self.num_classes)
            if self.normalize:
                phi = phi / math.hypot(*target.shape[1:])
        l_boundary = masked_mean((p * phi).sum(1), valid) / self.num_classes
        return w_region * self.region(logits, target) + w_boundary * l_boundary


@register_loss(
    "hausdorff",
    category="boundary",
    reference="Karimi, Salcudean. Reducing the Hausdorff Distance in Medical Image Segmentation with "
    "Convolutional Neural Networks. IEEE TMI 2020",
    original="binary",
    needs_distance_maps=True,
    maps=("unsigned_distance",),
    ranges={"alpha": (0, None), "dice_weight": (0, None)},
)
class HausdorffDTLoss(SegLoss):
    """Distance-transform Hausdorff loss ``mean((p − g)² · (d_p^α + d_g^α))`` plus a Dice term.

    Karimi & Salcudean's HD-DT loss, one-vs-rest per class on softmax probabilities: d_g and d_p are
    the distances to the boundary (``EDT(m) + EDT(~m)``) of the GT mask and of the current
    prediction thresholded at 0.5, recomputed every step; a mask that is empty or fills the image
    has no boundary and a zero map (as MONAI's ``HausdorffDTLoss``). Mean over valid pixels per
    image and class, then over images and classes (``include_background=False`` drops class 0).
    With ``dice_weight=0`` it equals MONAI's ``HausdorffDTLoss(alpha, softmax=True,
    to_onehot_y=True)``. The paper trains with ``L_HD + λ·L_DSC`` where λ makes the two terms equally
    large: ``dice_weight=None`` (default) sets λ each training step to the ratio of the running means
    (EMA, momentum 0.99) of the two terms — the paper updates it per epoch; a number fixes λ. The
    Dice term is the package's ``dice`` loss.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        alpha: float = 2.0,
        dice_weight: float | None = None,
        include_background: bool = True,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if not include_background and num_classes < 2:
            raise ValueError("loss 'hausdorff': include_background=False needs num_classes >= 2")
        self.alpha = float(alpha)
        self.dice_weight = dice_weight
        self.first = 0 if include_background else 1
        self.dice = DiceLoss(num_classes, ignore_index, include_background=include_background)
        self.register_buffer("running", torch.zeros(2), persistent=False)  # EMA of (L_HD, L_DSC)

    def hd_term(self, logits: Tensor, target: Tensor, unsigned_distance: Tensor | None = None) -> Tensor:
        valid = self.valid(target)
        p = self.probs(logits, target)
        g = self.one_hot(target)
        with torch.no_grad():
            top, arg = p.max(1)
            pred = torch.where(valid & (top > 0.5), arg, self.num_classes)
            dist = (
                unsigned_distance_maps(pred, self.num_classes) ** self.alpha
                + _given(unsigned_distance, "unsigned_distance", target, self.num_classes) ** self.alpha
            )
        per_class = ((p - g) ** 2 * dist).sum((2, 3)) / valid.sum((1, 2)).clamp_min(1)[:, None]
        return per_class[:, self.first :].mean()

    def forward(self, logits: Tensor, target: Tensor, unsigned_distance: Tensor | None = None) -> Tensor:
        hd = self.hd_term(logits, target, unsigned_distance)
        if self.dice_weight == 0:
            return hd
        dice = self.dice(logits, target)
        if self.dice_weight is not None:
            return hd + self.dice_weight * dice
        if self.training:
            self.running.mul_(0.99).add_(0.01 * torch.stack([hd.detach(), dice.detach()]))
        lam = self.running[0] / self.running[1].clamp_min(1e-12)
        return hd + lam * dice


BOUNDARY_AWARE_BINS = 5


@register_loss(
    "boundary_aware",
    category="boundary",
    reference="Hayder, He, Salzmann. Boundary-aware Instance Segmentation. CVPR 2017",
    original="binary",
    needs_distance_maps=True,
    inputs=("aux",),
    maps=("label_distance",),
    aux_channels=BOUNDARY_AWARE_BINS,
    ranges={"truncation": (1, None), "weight": (0, None)},
)
class BoundaryAwareLoss(SegLoss):
    """CE plus K binary CEs of an auxiliary head predicting the truncated, quantised distance map.

    Hayder et al. represent an instance mask by its truncated distance transform
    ``D(p) = min(⌈d(p, boundary)⌉, R)``, quantised into K uniform bins and predicted as K binary maps
    (K binary cross-entropies); the mask is decoded as a union of disks. Adaptation to semantic
    segmentation: d is each pixel's distance to the nearest pixel of another label (1 on a region's
    rim; a class filling the image measures to the border), so every class region plays the role
    of an instance; ``D = min(⌈d⌉, R)`` goes to bin ``⌈D·K/R⌉ − 1``. The ``aux`` head ``[B,K,H,W]``
    (K = 5 channels, fixed because the head is built from ``num_classes`` alone) is trained with the
    K sigmoid BCEs summed over bins and averaged over valid pixels, added with ``weight`` to the CE
    of the logits, which remain the segmentation output (no disk decoding). Defaults ``R = K = 5``
    (one bin per pixel of distance); the paper's values could not be verified.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, truncation: float = 5.0, weight: float = 1.0
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.truncation, self.weight = float(truncation), float(weight)
        self.ce = CrossEntropyLoss(num_classes, ignore_index)

    def distance_bins(self, target: Tensor, label_distance: Tensor | None = None) -> Tensor:
        """``[B,H,W]`` int64 bin index of the truncated distance map, in ``[0, K)``."""
        k = BOUNDARY_AWARE_BINS
        d = _given(label_distance, "label_distance", target, self.num_classes)
        d = d.ceil().clamp(max=self.truncation)
        return ((d * k / self.truncation).ceil() - 1).clamp(0, k - 1).long()

    def forward(
        self, logits: Tensor, target: Tensor, aux: Tensor, label_distance: Tensor | None = None
    ) -> Tensor:
        b, _, h, w = logits.shape
        if aux.shape != (b, BOUNDARY_AWARE_BINS, h, w):
            raise ValueError(
                f"loss 'boundary_aware': aux must be [B, {BOUNDARY_AWARE_BINS}, H, W] = "
                f"{[b, BOUNDARY_AWARE_BINS, h, w]}, got {list(aux.shape)}"
            )
        with torch.no_grad():
            bins = (
                F.one_hot(self.distance_bins(target, label_distance), BOUNDARY_AWARE_BINS)
                .permute(0, 3, 1, 2)
                .float()
            )
        bce = F.binary_cross_entropy_with_logits(aux.float(), bins, reduction="none").sum(1)
        return self.ce(logits, target) + self.weight * masked_mean(bce, self.valid(target))


# the 8 neighbours (dy, dx), row-major; index 8 is the pixel itself
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]

# the 8 directions of the authors' abl.py in their order (ties go to the first): the four straight
# ones (down, up, left, right), then the diagonals (up-right, down-right, up-left, down-left)
_ABL_DIRECTIONS = [(1, 0), (-1, 0), (0, -1), (0, 1), (-1, 1), (1, 1), (-1, -1), (1, -1)]


def _float32(x: float) -> float:
    """``x`` rounded to float32."""
    return torch.tensor(x, dtype=torch.float32).item()


def _shifted(padded: Tensor, dy: int, dx: int, h: int, w: int) -> Tensor:
    """The neighbour at offset (dy, dx) of every pixel, from a map padded by ``r`` on each side."""
    r = (padded.shape[-2] - h) // 2
    return padded[..., r + dy : r + dy + h, r + dx : r + dx + w]


@register_loss(
    "active_boundary",
    category="boundary",
    reference="Wang, Zhang, Cui, Ren, Yang, Xie, Hua, Bao, Xu. Active Boundary Loss for Semantic "
    "Segmentation. AAAI 2022",
    needs_distance_maps=True,
    choices={"threshold": ("image", "batch")},
    ranges={
        "weight": (0, None),
        "max_clip_dist": (0, None),
        "boundary_ratio": (0, 1),
        "label_smoothing": (0, 1),
    },
)
class ActiveBoundaryLoss(SegLoss):
    """CE plus the active boundary loss: move predicted boundaries towards the nearest GT boundary.

    As the authors' ``abl.py``: predicted boundary pixels are those whose KL divergence to the right
    or lower neighbour (summed) exceeds ε, dilated by 3×3; ε keeps at most ``boundary_ratio`` (1%)
    of the pixels. For each of them the target is the direction, among the 8 neighbours, of the
    smallest GT distance map value, ties going to the first in the authors' order (down, up, left,
    right, then the diagonals up-right, down-right, up-left, down-left); pixels whose own value is
    strictly smallest are skipped. The distance map is the distance to the nearest GT boundary pixel
    minus 1 (0 on it), truncated to an integer as the authors' ``int32`` map does
    (``integer_distances=True``; ``False`` keeps the exact Euclidean distances). The prediction is
    the 8 KL divergences ``KL(p_neighbour ‖ p_pixel)`` (neighbours detached, image borders
    replicated) used as logits of a cross-entropy with the authors' label smoothing
    (``LabelSmoothSoftmaxCEV1``): weight ``1 - ε`` on the target direction and ``ε/8`` on each
    other one (0.8 / 0.025 at ε = 0.2; torch's ``label_smoothing`` would put ``1 - ε + ε/8`` on the
    target), weighted by ``min(dist, 20)/20`` and averaged over those pixels. Total
    ``CE + weight·ABL``; the paper also adds a Lovász-softmax term (combine with ``lovasz`` for
    that).

    Differences: ε is found per image as the exact quantile in one ``kthvalue`` call
    (``threshold="image"``); the original grows ε from 1e-5 by 1.2× in a Python loop until at
    most ``boundary_ratio`` of one image's pixels remain in the whole batch (``threshold="batch"``,
    one host sync). Everything is dense with static shapes, so "no predicted boundary" gives an ABL term of
    0 (the original returns ``None``). A GT boundary pixel has a right or lower neighbour with
    another valid label; the original also makes ignored regions boundary, here they are not, KL
    pairs and 3×3 neighbourhoods touching an ignored pixel are left out, and images without a GT
    boundary contribute no ABL term.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        weight: float = 1.0,
        max_clip_dist: float = 20.0,
        boundary_ratio: float = 0.01,
        label_smoothing: float = 0.2,
        integer_distances: bool = True,
        threshold: str = "image",
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if threshold not in ("image", "batch"):
            raise ValueError(f"loss 'active_boundary': threshold={threshold!r} must be 'image' or 'batch'")
        self.threshold = threshold
        self.weight, self.max_clip_dist = float(weight), float(max_clip_dist)
        self.boundary_ratio, self.label_smoothing = float(boundary_ratio), float(label_smoothing)
        self.integer_distances = bool(integer_distances)
        self.ce = CrossEntropyLoss(num_classes, ignore_index)

    def gt_distance(self, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Distance to the nearest GT boundary pixel minus 1 (≥ 0; truncated to an integer unless
        ``integer_distances=False``), ``[B,H,W]``; and ``[B]`` has-boundary."""
        down = (target[:, 1:] != target[:, :-1]) & valid[:, 1:] & valid[:, :-1]
        right = (target[:, :, 1:] != target[:, :, :-1]) & valid[:, :, 1:] & valid[:, :, :-1]
        edge = F.pad(down, (0, 0, 0, 1)) | F.pad(right, (0, 1))
        d = edt_batch(~edge)
        if self.integer_distances:
            d = d.floor()
        return (d - 1).clamp_min(0), edge.flatten(1).any(1)

    def predicted_boundary(self, logp: Tensor, valid: Tensor) -> Tensor:
        """``[B,H,W]`` bool: KL to the lower/right neighbour above the per-image threshold, dilated."""
        p = logp.exp()
        pair_down, pair_right = valid[:, :-1] & valid[:, 1:], valid[..., :-1] & valid[..., 1:]
        kl_down = (p[:, :, :-1] * (logp[:, :, :-1] - logp[:, :, 1:])).sum(1) * pair_down
        kl_right = (p[..., :-1] * (logp[..., :-1] - logp[..., 1:])).sum(1) * pair_right
        kl = (F.pad(kl_down, (0, 0, 0, 1)) + F.pad(kl_right, (0, 1))).flatten(1)
        n = kl.shape[1]
        if self.threshold == "image":
            keep = min(int(n * self.boundary_ratio), n - 1)
            eps = kl.kthvalue(n - keep, dim=1).values.clamp_min(1e-5)[:, None]
        else:  # the authors' loop: ε = 1e-5·1.2^k, the first with ≤ ratio·H·W pixels in the batch
            flat, keep = kl.flatten(), int(n * self.boundary_ratio)
            q = flat.kthvalue(flat.numel() - keep).values.item() if keep < flat.numel() else 0.0
            eps = 1e-5
            while _float32(eps) < q:  # compared in float32, as the authors' tensor comparison
                eps *= 1.2
        found = (kl > eps).view_as(valid).float()
        return F.max_pool2d(found[:, None], 3, 1, 1)[:, 0] > 0

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _, _, h, w = logits.shape
        valid = self.valid(target)
        logp = logits.float().log_softmax(1)
        with torch.no_grad():
            dist, has_edge = self.gt_distance(target, valid)
            padded = F.pad(dist, (1, 1, 1, 1), value=1e5)
            around = torch.stack([_shifted(padded, dy, dx, h, w) for dy, dx in _ABL_DIRECTIONS] + [dist], 1)
            direction = around.argmin(1)  # the first of equal minima: the authors' tie order
            near_ignored = F.max_pool2d((~valid).float()[:, None], 3, 1, 1)[:, 0] > 0
            select = self.predicted_boundary(logp.detach(), valid) & (direction < 8) & ~near_ignored
            select &= has_edge[:, None, None]
            weight = dist.clamp(max=self.max_clip_dist) / self.max_clip_dist
            logq = F.pad(logp.detach(), (1, 1, 1, 1), mode="replicate")
            q = logq.exp()
            neg_entropy = (q * logq).sum(1)
        kl = torch.stack(
            [
                _shifted(neg_entropy, dy, dx, h, w) - (_shifted(q, dy, dx, h, w) * logp).sum(1)
                for dy, dx in _ABL_DIRECTIONS
            ],
            1,
        )
        log_kl = kl.log_softmax(1)
        own = log_kl.gather(1, direction.clamp(max=7).unsqueeze(1)).squeeze(1)
        eps = self.label_smoothing
        ce_dir = -((1 - eps) * own + eps / 8 * (log_kl.sum(1) - own))  # the authors' smoothing
        abl = masked_mean(ce_dir * weight, select)
        return self.ce(logits, target) + self.weight * abl


def _cross_counts(onehot: Tensor) -> Tensor:
    """Per pixel, how many of itself and its 4 neighbours are in the mask (3×3 cross convolution,
    zero padding), ``[B,C,H,W]``."""
    b, c, h, w = onehot.shape
    kernel = onehot.new_tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(onehot.reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)


@register_loss(
    "boundary_dou",
    category="boundary",
    reference="Sun, Luo, Li. Boundary Difference over Union Loss for Medical Image Segmentation. MICCAI 2023",
    original="binary",
    ranges={"max_alpha": (-1, 1)},
)
class BoundaryDoULoss(SegLoss):
    """Boundary DoU loss ``(|G∪P| − |G∩P|) / (|G∪P| − α|G∩P|)``, per class, mean over classes.

    As the authors' code: soft sets with squares, ``(Σp² + Σg² − 2Σpg + s) / (Σp² + Σg² − (1+α)Σpg + s)``,
    s = 1e-5, sums over the whole batch; α = 2(1 − C/S) − 1 capped at ``max_alpha`` = 0.8, where S
    is the class's GT area and C its boundary length, the GT pixels with fewer than 5 in their 3×3
    cross (zero padding, so image borders and ignored neighbours count as boundary), counted on the
    device with a convolution. One-vs-rest for every class (background included); a class absent
    from the batch scores exactly 1 with no gradient (false positives on it are not penalised); an
    all-ignored batch gives 0.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, max_alpha: float = 0.8) -> None:
        super().__init__(num_classes, ignore_index)
        self.max_alpha = float(max_alpha)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        p, g = self.probs(logits, target), self.one_hot(target)
        smooth = 1e-5
        with torch.no_grad():
            area = g.sum((0, 2, 3))
            rim = (g * (_cross_counts(g) < 5)).sum((0, 2, 3))
            alpha = (2 * (1 - (rim + smooth) / (area + smooth)) - 1).clamp(max=self.max_alpha)
        inter = (p * g).sum((0, 2, 3))
        total = (p * p).sum((0, 2, 3)) + area
        dou = (total - 2 * inter + smooth) / (total - (1 + alpha) * inter + smooth)
        return dou.mean() * self.valid(target).any()


def _label_edges(target: Tensor, valid: Tensor) -> Tensor:
    """``[B,H,W]`` bool: valid pixels with an 8-neighbour of another label, an ignored 8-neighbour,
    or an 8-neighbour outside the image (the erosion of the authors' ``mask_to_boundary``)."""
    h, w = target.shape[1:]
    t = F.pad(torch.where(valid, target, -1), (1, 1, 1, 1), value=-1)
    edge = torch.zeros_like(valid)
    for dy, dx in _NEIGHBOURS:
        edge |= _shifted(t, dy, dx, h, w) != target
    return edge & valid


@register_loss(
    "conditional_boundary",
    category="boundary",
    reference="Wu, Guo, Li, Yu, Gao, Sang. Conditional Boundary Loss for Semantic Segmentation. "
    "IEEE TIP 2023",
    inputs=("features",),
    ranges={
        "context_weight": (0, None),
        "center_weight": (0, None),
        "center_cls_weight": (0, None),
        "dilation_ratio": (0, 1),
    },
)
class ConditionalBoundaryLoss(SegLoss):
    """CE plus the conditional boundary loss on the decoder features of GT boundary pixels.

    GT boundary pixels, as the authors' ``multi_class_gt_to_boundary``: at the label resolution,
    the valid pixels within ``k = max(1, round(dilation_ratio · diagonal))`` pixels (chessboard) of
    a pixel of another label, an ignored pixel or the image border; then resized (nearest, with the
    target) to the feature resolution. ``dilation_ratio`` = 0.02 is what the authors' code applies:
    their config sets 0.005, but ``multi_class_gt_to_boundary`` does not pass it on to
    ``mask_to_boundary``, whose default 0.02 is used (at 512×1024, k = 23 px at full resolution).
    Then, for each boundary pixel i and its 5×5 neighbours j at the feature resolution (logits
    resized bilinear over valid pixels):

    - A2P&N (``context_weight``, 1): cosine similarity of features f_i, f_j regressed (MSE) to 1
      for same-label neighbours (positives) and 0 for the others (negatives, ignored ones
      included); as the authors, only boundary pixels of classes ``c ≥ 1`` (their mask is
      multiplied by the label) at least 2 pixels from the image border, averaged per image over
      pixels and the 24 neighbours, then over the images that have such pixels;
    - A2C (``center_weight``, 2): if i is predicted correctly, f_i is pulled (MSE, centre detached)
      to its local class centre, the mean feature of its correctly predicted same-label neighbours;
    - the condition (``center_cls_weight``, 0.2): the centres (of all same-label neighbours, and of
      the correctly predicted ones) must be classified as i's class (CE).

    Weights and the 5×5 window are those of the authors' code; A2C and the condition are averaged
    per class, then over the classes that have both kinds of pixels; centres divide by the
    neighbour count + 1e-5 as theirs. Simplification: the classifier is not available to a loss,
    so a centre is classified by the mean of the neighbours' logits — equal to the authors'
    classifier applied to the mean feature when the head is a linear 1×1 convolution without bias
    (with a bias b, they differ by ``b·1e-5/(count + 1e-5)``; gradients then also reach the head,
    where the original detaches it). An image whose boundary pixels all lie within 2 pixels of its
    border makes the original's A2P&N term NaN (then 0 for the batch); here that image is left out.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        context_weight: float = 1.0,
        center_weight: float = 2.0,
        center_cls_weight: float = 0.2,
        dilation_ratio: float = 0.02,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        self.context_weight, self.center_weight = float(context_weight), float(center_weight)
        self.center_cls_weight, self.dilation_ratio = float(center_cls_weight), float(dilation_ratio)
        self.ce = CrossEntropyLoss(num_classes, ignore_index)

    def boundary(self, target: Tensor) -> Tensor:
        """GT boundary pixels ``[B,H,W]`` at the target's resolution: valid pixels within k
        (chessboard) of another label, an ignored pixel or the image border."""
        k = max(1, round(self.dilation_ratio * math.hypot(*target.shape[1:])))
        valid = self.valid(target)
        edge = _label_edges(target, valid).float()[:, None]
        return (F.max_pool2d(edge, 2 * k - 1, 1, k - 1)[:, 0] > 0) & valid

    @torch.no_grad()
    def resized(self, target: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Target and GT boundary (found at the target's resolution) resized nearest to ``size``."""
        boundary = self.boundary(target)
        if target.shape[-2:] == size:
            return target, boundary
        both = torch.stack([target.float(), boundary.float()], 1)
        t, b = F.interpolate(both, size=size, mode="nearest").unbind(1)
        return t.long(), b > 0

    def per_class_mean(self, values: Tensor, mask: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of ``values`` over ``mask`` per GT class: ``[C]`` means and ``[C]`` counts."""
        idx = torch.where(mask, target, 0).flatten()
        sums = values.new_zeros(self.num_classes).index_add(0, idx, (values * mask).flatten())
        counts = values.new_zeros(self.num_classes).index_add(0, idx, mask.flatten().to(values.dtype))
        return sums / counts.clamp_min(1), counts

    def forward(self, logits: Tensor, target: Tensor, features: Tensor) -> Tensor:
        ce = self.ce(logits, target)
        f = features.float()
        _, _, h, w = f.shape
        lg = logits.float()
        t, boundary = self.resized(target, (h, w))
        if lg.shape[-2:] != (h, w):  # bilinear over valid pixels only: ignored logits stay out
            full_valid = self.valid(target)[:, None].float()
            weight = F.interpolate(full_valid, size=(h, w), mode="bilinear", align_corners=False)
            lg = F.interpolate(lg * full_valid, size=(h, w), mode="bilinear", align_corners=False)
            lg = lg / weight.clamp_min(1e-6)
        valid = self.valid(t)
        r = 2
        with torch.no_grad():
            correct = valid & (lg.argmax(1) == t)
            interior = torch.zeros_like(valid)
            interior[:, r : h - r, r : w - r] = True
            context = boundary & (t > 0) & interior  # the authors' boundary mask × label
        t_pad, correct_pad = F.pad(torch.where(valid, t, -1), (r,) * 4, value=-1), F.pad(correct, (r,) * 4)
        fn = F.normalize(f, dim=1)
        fn_pad, f_pad, lg_pad = F.pad(fn, (r,) * 4), F.pad(f.detach(), (r,) * 4), F.pad(lg, (r,) * 4)
        pn_err = f.new_zeros(t.shape)
        n_same, n_corr, f_corr = f.new_zeros(t.shape), f.new_zeros(t.shape), torch.zeros_like(f)
        lg_same, lg_corr = torch.zeros_like(lg), torch.zeros_like(lg)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if dy == dx == 0:
                    continue
                with torch.no_grad():  # masks, counts and the (detached) centre feature
                    same = (_shifted(t_pad, dy, dx, h, w) == t).float() * valid
                    corr = same * _shifted(correct_pad, dy, dx, h, w)
                    n_same += same
                    n_corr += corr
                    f_corr.addcmul_(_shifted(f_pad, dy, dx, h, w), corr[:, None])
                cos = (fn * _shifted(fn_pad, dy, dx, h, w)).sum(1)
                pn_err = pn_err + (cos - same) ** 2
                lg_same = lg_same + _shifted(lg_pad, dy, dx, h, w) * same[:, None]
                lg_corr = lg_corr + _shifted(lg_pad, dy, dx, h, w) * corr[:, None]
        per_image = (pn_err * context).sum((1, 2)) / (24 * context.sum((1, 2))).clamp_min(1)
        a2pn = masked_mean(per_image, context.flatten(1).any(1))

        sel_same = boundary & valid & (n_same > 0)
        sel_corr = boundary & correct & (n_corr > 0)
        safe_t = torch.where(valid, t, 0)
        centre = f_corr / (n_corr + 1e-5)[:, None]  # no gradient (the authors detach it)
        mse, cnt_corr = self.per_class_mean(((f - centre) ** 2).mean(1), sel_corr, safe_t)
        ce_same = F.cross_entropy(lg_same / (n_same + 1e-5)[:, None], safe_t, reduction="none")
        ce_corr = F.cross_entropy(lg_corr / (n_corr + 1e-5)[:, None], safe_t, reduction="none")
        cls_same, cnt_same = self.per_class_mean(ce_same, sel_same, safe_t)
        cls_corr, _ = self.per_class_mean(ce_corr, sel_corr, safe_t)
        counted = (cnt_same > 0) & (cnt_corr > 0)
        a2c = masked_mean(mse, counted)
        condition = masked_mean(cls_same + cls_corr, counted)
        return ce + self.context_weight * a2pn + self.center_weight * a2c + self.center_cls_weight * condition


@register_loss(
    "region_wise",
    category="boundary",
    reference="Valverde, Tohka. Region-wise loss for biomedical image segmentation. Pattern Recognition 2023",
    needs_distance_maps=True,
    maps=lambda hp: ("signed_distance",) if hp["rw_map"] == "signed" else ("label_distance",),
    choices={"rw_map": ("rrw", "signed")},
)
class RegionWiseLoss(SegLoss):
    """Region-wise loss ``mean(softmax · Z)`` with rectified region-wise (RRW) maps Z by default.

    RRW, as the authors' code: for class c, Z_c = −d/d_max on c's pixels (d = distance to the
    nearest pixel of another label, d_max its per-image maximum over the class, so ∈ [−1, 0)) and
    +1 everywhere else, so the loss rewards probability deep inside the true class and penalises any
    probability elsewhere with a bounded, scale-free map; an absent class is +1 everywhere.
    ``rw_map="signed"`` uses Kervadec's signed distance maps instead (the RW form of the boundary
    loss). Mean over valid pixels and classes; the loss is negative for good predictions.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, rw_map: str = "rrw") -> None:
        super().__init__(num_classes, ignore_index)
        if rw_map not in ("rrw", "signed"):
            raise ValueError(f"loss 'region_wise': rw_map={rw_map!r} must be 'rrw' or 'signed'")
        self.rw_map = rw_map

    @torch.no_grad()
    def maps(self, target: Tensor, given: Tensor | None = None) -> Tensor:
        """The RW maps ``[B,C,H,W]`` of a target (from its ``given`` signed or label-distance map)."""
        if self.rw_map == "signed":
            return _given(given, "signed_distance", target, self.num_classes)
        d = _given(given, "label_distance", target, self.num_classes)
        dmax = _class_max(d, target, self.num_classes)[:, : self.num_classes]
        onehot = self.one_hot(target).bool()
        return torch.where(onehot, -d[:, None] / dmax[:, :, None, None].clamp_min(1), 1.0)

    def forward(
        self,
        logits: Tensor,
        target: Tensor,
        label_distance: Tensor | None = None,
        signed_distance: Tensor | None = None,
    ) -> Tensor:
        z = self.maps(target, signed_distance if self.rw_map == "signed" else label_distance)
        return masked_mean((self.probs(logits, target) * z).sum(1), self.valid(target)) / self.num_classes
